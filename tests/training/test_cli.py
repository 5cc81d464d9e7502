import subprocess
import sys

import pytest
import torch

from neuromamba.cli import parse_args, parse_run, run_config_of
from neuromamba.training.strategies import STRATEGY_BUILDERS, build_strategy, deepspeed_config
from neuromamba.training.trainer import trainer_kwargs

README_PRETRAIN = ("--model fmamba --pretraining --use_autoregressive --calc_loss_without_background "
                   "--embed_dim 192 --depth 12 --patch_size 6 6 6 2 --img_size 96 96 96 20 --batch_size 3 "
                   "--gradient_accumulation_steps 1 --precision bf16 --dataset_name Dummy --max_epochs 40 "
                   "--learning_rate 1e-4 --weight_decay 1e-2 --accelerator gpu --devices 12 --num_nodes 32 "
                   "--strategy deepspeed_stage_1 --loggername wandb --project_name neuromamba_pretrain").split()


def test_readme_pretraining_flags_parse():
    a = parse_args(README_PRETRAIN)
    assert a.task == "pretraining" and a.background_removal == "batch"
    assert (a.embed_dim, a.depth, a.d_state, a.headdim) == (192, 12, 48, 192)
    # DeepSpeed ZeRO-1 with --precision bf16: fp32 weights, bf16 autocast inside the module
    assert a.lightning_precision == "32-true" and a.autocast_dtype == "bfloat16"
    assert a.devices == 12 and a.num_nodes == 32


def test_readme_finetune_flags_parse(tmp_path):
    from neuromamba.checkpoints import save_released_format
    from neuromamba.models import FMamba

    ckpt = save_released_format(FMamba(embed_dim=16, depth=1, d_state=8, headdim=16,
                                       img_size=(24, 24, 24, 4)), tmp_path / "3M_E192.pt")
    a = parse_args(["--model", "fmamba", "--downstream_task", "sex", "--downstream_task_type", "classification",
                    "--dataset_name", "HCP", "--image_path", str(tmp_path), "--load_model_path", str(ckpt),
                    "--embed_dim", "192", "--depth", "12", "--clf_head_version", "mamba",
                    "--freeze_feature_extractor", "--precision", "bf16"])
    assert a.task == "classification" and a.freeze_feature_extractor and a.clf_head_version == "mamba"


def test_model_size_and_explicit_override():
    a = parse_args(["--pretraining", "--model_size", "medium", "--depth", "2"])
    assert (a.embed_dim, a.depth, a.d_state, a.headdim) == (256, 2, 64, 256)


@pytest.mark.parametrize("argv, message", [
    (["--freeze_feature_extractor"], "--freeze_feature_extractor needs"),
    (["--prompt_tuning"], "--prompt_tuning needs"),
    (["--pretraining", "--img_size", "96", "96", "96", "21"], "not divisible"),
    (["--pretraining", "--downstream_task", "sex"], "--pretraining learns without labels"),
    (["--use_autoregressive"], "add --pretraining"),
    (["--pretraining", "--calc_loss_without_background", "--background_removal", "none"], "contradicts"),
    (["--test_only"], "--test_only needs --test_ckpt_path"),
    (["--pretraining", "--strategy", "deepspeed_stage_1", "--accelerator", "cpu"], "needs CUDA"),
    (["--dataset_name", "HCP", "--downstream_task", "sex"], "needs --image_path"),
    (["--clf_head_version", "transformer"], "--clf_head_version"),
    (["--downstream_task_type", "regression", "--label_smoothing", "0.1"], "--label_smoothing"),
    (["--pretraining", "--warmup_ratio", "1.5"], "--warmup_ratio"),
    (["--pretraining", "--load_model_path", "/nonexistent.pt"], "no such file"),
])
def test_contradictions_fail_with_one_sentence(argv, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("-", r"\-")):
        parse_args(argv)


def test_unknown_flag_exits():
    with pytest.raises(SystemExit):
        parse_args(["--pretraining", "--no_such_flag"])


def test_a_typo_gets_one_line_with_the_closest_flag_and_no_abbreviation(capsys):
    """--max_epcohs printed 55 lines of usage before "unrecognized arguments"; --max_epoch was
    silently taken for --max_epochs."""
    for argv, flag, close in ((["--max_epcohs", "1"], "--max_epcohs", "--max_epochs"),
                              (["--max_epoch", "3"], "--max_epoch", "--max_epochs"),
                              (["--learning_rat=0.1"], "--learning_rat", "--learning_rate")):
        with pytest.raises(SystemExit) as exit_:
            parse_args(["--pretraining", *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert err == (f"main.py: error: unrecognized argument {flag} (did you mean {close}?); "
                       f"main.py --help lists every flag\n")


def test_each_command_names_itself_as_typed(monkeypatch, capsys):
    """Under the console command the usage says `neuromamba preprocess nifti`, not the script."""
    from neuromamba.commands import main as console

    monkeypatch.setattr(sys, "argv", ["/venv/bin/neuromamba"])
    with pytest.raises(SystemExit):
        console(["preprocess", "nifti", "--help"])
    assert capsys.readouterr().out.startswith("usage: neuromamba preprocess nifti ")
    with pytest.raises(SystemExit) as exit_:
        console(["train", "--max_epcohs", "1"])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith(
        "neuromamba train: error: unrecognized argument --max_epcohs (did you mean --max_epochs?)")
    monkeypatch.setattr(sys, "argv", ["project/preprocess.py"])
    with pytest.raises(SystemExit):
        console(["preprocess", "check", "--help"])
    assert capsys.readouterr().out.startswith("usage: preprocess.py check ")


def test_main_prints_one_line_error(repo_root):
    proc = subprocess.run([sys.executable, str(repo_root / "project" / "main.py"), "--freeze_feature_extractor"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines == ["main.py: error: --freeze_feature_extractor needs a pretrained backbone from --load_model_path"]


def test_main_one_line_error_for_bad_input_found_while_building_the_run(repo_root, tmp_path, capsys, monkeypatch):
    # Bad input found only while building the run: an --image_path folder without HDF5 runs.
    import importlib.util

    spec = importlib.util.spec_from_file_location("nm_main", repo_root / "project" / "main.py")
    main_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_module)
    monkeypatch.delenv("NEUROMAMBA_DEBUG", raising=False)
    (tmp_path / "h5" / "100206").mkdir(parents=True)
    code = main_module.main(["--pretraining", "--dataset_name", "HCP", "--image_path", str(tmp_path / "h5"),
                             "--output_dir", str(tmp_path / "runs"), "--no_progress_bar"])
    assert code == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("main.py: error: --image_path ") and "no runs found" in lines[0]


def test_unknown_dataset_name_is_rejected_when_parsing():
    with pytest.raises(ValueError, match=r"^--dataset_name 'Foo' is unknown; choose one of"):
        parse_args(["--pretraining", "--dataset_name", "Foo", "--image_path", "."])


def test_config_yaml_defaults_and_command_line_wins(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pretraining: true\nlearning_rate: 0.003\nbatch_size: 7\nimg_size: [48, 48, 48, 10]\n"
                   "model_size: small\n")
    a = parse_args(["--config", str(cfg), "--batch_size", "2"])
    assert a.pretraining and a.learning_rate == 0.003 and a.batch_size == 2
    assert a.img_size == [48, 48, 48, 10] and a.embed_dim == 128


def test_config_yaml_unknown_key_and_bad_choice(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pretraining: true\nlerning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_args(["--config", str(cfg)])
    cfg.write_text("pretraining: true\nmodel_size: huge\n")
    with pytest.raises(ValueError, match="model_size"):
        parse_args(["--config", str(cfg)])


def test_variant_presets_parse(repo_root):
    for name in ("small", "base", "medium", "large"):
        a = parse_args(["--config", str(repo_root / "configs" / f"pretrain_{name}.yaml"), "--accelerator", "gpu"])
        assert a.model_size == name and a.pretraining


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_strategy_objects_from_flags(stage):
    from pytorch_lightning.strategies import DeepSpeedStrategy

    a = parse_args(README_PRETRAIN[:-6] + ["--strategy", f"deepspeed_stage_{stage}"])
    strategy = build_strategy(run_config_of(a).hardware)
    assert isinstance(strategy, DeepSpeedStrategy)
    assert strategy.config["zero_optimization"]["stage"] == stage
    # --precision bf16: fp32 weights with the module's own bf16 autocast, no DeepSpeed bf16 mode
    assert "bf16" not in strategy.config and "fp16" not in strategy.config
    assert a.lightning_precision == "32-true" and a.autocast_dtype == "bfloat16"
    assert "gradient_accumulation_steps" not in strategy.config  # Lightning sets it from the Trainer


def test_deepspeed_fp16_and_offload_config():
    cfg = deepspeed_config(2, "16-mixed", offload=True)
    assert cfg["fp16"]["enabled"] and "bf16" not in cfg
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_trainer_kwargs_map_flags(tmp_path):
    a = parse_args(["--pretraining", "--precision", "bf16", "--gradient_accumulation_steps", "4",
                    "--clip_grad_norm", "1.0", "--strategy", "ddp", "--accelerator", "cpu", "--devices", "2",
                    "--limit_train_batches", "3"])
    kw = trainer_kwargs(run_config_of(a), tmp_path)
    assert kw["precision"] == "bf16-mixed" and kw["accumulate_grad_batches"] == 4
    assert kw["gradient_clip_val"] == 1.0 and kw["devices"] == 2
    assert kw["limit_train_batches"] == 3 and isinstance(kw["limit_train_batches"], int)
    assert parse_args(["--pretraining", "--limit_val_batches", "0.25"]).limit_val_batches == 0.25
    assert parse_args(["--pretraining", "--limit_val_batches", "1"]).limit_val_batches == 1
    assert set(STRATEGY_BUILDERS) >= {"ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"}


def test_best_checkpoint_monitor_defaults_and_override():
    from neuromamba.training.trainer import monitor_for

    assert monitor_for(parse_run(["--pretraining"])) == ("val/loss", "min")
    assert monitor_for(parse_run([])) == ("val/loss", "min")
    assert monitor_for(parse_run(["--downstream_task_type", "regression"])) == ("val/mse", "min")
    assert monitor_for(parse_run(["--monitor", "auroc"])) == ("val/auroc", "max")
    assert monitor_for(parse_run(["--monitor", "val/mae", "--monitor_mode", "min",
                                  "--downstream_task_type", "regression"])) == ("val/mae", "min")


def test_unreadable_yaml_and_checkpoint_files_are_one_sentence_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1\n")
    not_a_ckpt = tmp_path / "truncated.ckpt"
    not_a_ckpt.write_bytes(b"PK\x03")
    with pytest.raises(ValueError, match=r"^--config .*bad.yaml: not valid YAML \(.*line 1"):
        parse_args(["--config", str(bad_yaml)])
    with pytest.raises(ValueError, match=r"^--wandb_config .*bad.yaml: not valid YAML"):
        parse_args(["--pretraining", "--loggername", "wandb", "--wandb_config", str(bad_yaml)])
    with pytest.raises(ValueError, match=r"^--resume_ckpt_path .*truncated.ckpt: not a PyTorch checkpoint"):
        parse_args(["--pretraining", "--resume_ckpt_path", str(not_a_ckpt)])
    with pytest.raises(ValueError, match=r"^--test_ckpt_path .*truncated.ckpt: not a PyTorch checkpoint"):
        parse_args(["--test_only", "--test_ckpt_path", str(not_a_ckpt)])


def test_test_only_on_a_backbone_file_names_the_file(tmp_path):
    import torch

    from neuromamba.training.module import NeuroMambaModule

    released = tmp_path / "released.pt"
    torch.save({"embedder.projection.weight": torch.zeros(2, 2)}, released)
    with pytest.raises(ValueError, match=r"released.pt: not a checkpoint written by project/main.py"):
        NeuroMambaModule.from_checkpoint(str(released))


def test_the_task_follows_from_the_target_column(tmp_path):
    import csv

    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "dx", "score", "site"])
        for i in range(30):
            writer.writerow([f"s{i}", ["HC", "ASD", "ADHD"][i % 3], 10.5 + i * 0.37, i % 4])
    base = ["--dataset_name", "CSV", "--image_path", str(tmp_path), "--label_csv", str(table),
            "--subject_column", "ID"]
    args = parse_args(base + ["--target_column", "dx"])
    assert (args.downstream_task, args.task) == ("dx", "classification")
    assert "3 distinct string values -> classification" in args.run_context.announce[-1]
    assert parse_args(base + ["--target_column", "site"]).task == "classification"  # 4 integers
    assert parse_args(base + ["--target_column", "score"]).task == "regression"
    # an explicit type wins
    assert parse_args(base + ["--target_column", "site", "--downstream_task_type", "regression"]).task == "regression"
    with pytest.raises(ValueError, match="'nope' is not a column"):
        parse_args(base + ["--target_column", "nope"])


def test_impossible_launches_are_refused_before_anything_starts(monkeypatch, tmp_path):
    import os
    import time

    from neuromamba.machine import LAUNCHER_VARIABLES, check_hardware

    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    started = time.time()
    args = parse_args(["--accelerator", "cpu", "--devices", "12", "--num_nodes", "32", "--pretraining",
                       "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="needs a multi-node launcher.*SLURM.*PBS.*torchrun"):
        check_hardware(run_config_of(args).hardware)
    assert time.time() - started < 10 and not any(tmp_path.iterdir())
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    args = parse_args(["--accelerator", "cpu", "--devices", str((os.cpu_count() or 1) + 1), "--pretraining"])
    with pytest.raises(ValueError, match="processes on"):
        check_hardware(run_config_of(args).hardware)
    with pytest.warns(Warning, match="--precision bf16 on the CPU"):
        check_hardware(parse_run(["--accelerator", "cpu", "--precision", "bf16", "--pretraining"]).hardware)
