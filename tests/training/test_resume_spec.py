"""Resume never changes the input or the model: without the flag it keeps the run's own, with
a contradicting flag it refuses in one line; args.yaml and the checkpoint never disagree."""
import sys
from pathlib import Path

import torch
import yaml

from neuromamba.cli import parse_run
from neuromamba.training.runner import run

PROJECT = Path(__file__).resolve().parents[2] / "project"
TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--pretraining", "--dummy_num_subjects", "6", "--batch_size", "4", "--seed", "5",
        "--limit_test_batches", "1"]


def _recorded(run_dir):
    args = yaml.safe_load((Path(run_dir) / "args.yaml").read_text())
    ckpt = torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    return args, ckpt["hyper_parameters"]["config"], ckpt["epoch"]


def test_resume_without_the_flag_keeps_the_runs_input(tmp_path, capsys):
    first = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--run_name", "r", "--max_epochs", "1",
                                   "--input_scaling_method", "znorm_zeroback", "--calc_loss_without_background"]))
    last = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    resumed = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--max_epochs", "2",
                                     "--resume_ckpt_path", str(last)]))
    assert Path(resumed["run_dir"]) == tmp_path / "r"
    # the second epoch read the same input, through the same model
    assert resumed["trainer"].datamodule.clip_spec.scaling_method == "znorm_zeroback"
    assert resumed["module"].model.background_removal == "batch"
    args, config, epoch = _recorded(resumed["run_dir"])
    assert epoch == 1
    for record in (args, config, {**config["spec"]["input"], **config["spec"]["model"]}):
        assert record["input_scaling_method"] == "znorm_zeroback"
        assert record["background_removal"] == "batch"
    assert args["setting_sources"]["input_scaling_method"] == "checkpoint"


def test_resume_with_a_contradicting_flag_is_refused_in_one_line(tmp_path, capsys):
    first = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--run_name", "r", "--max_epochs", "1",
                                   "--input_scaling_method", "znorm_zeroback"]))
    last = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    before = (Path(first["run_dir"]) / "args.yaml").read_text()
    capsys.readouterr()
    import main

    rc = main.main(TINY + ["--output_dir", str(tmp_path), "--max_epochs", "2", "--resume_ckpt_path", str(last),
                           "--input_scaling_method", "znorm_minback"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--input_scaling_method znorm_minback (checkpoint: znorm_zeroback)" in err[0]
    assert (Path(first["run_dir"]) / "args.yaml").read_text() == before  # nothing rewritten


def test_the_module_reads_its_config_once_into_typed_options():
    """NeuroMambaModule read 27 keys of its config dict, many through .get(key, default), and
    rebuilt the spec three times: now one typed reading, defaults in one place."""
    from neuromamba.cli import parse_args
    from neuromamba.run_settings import args_to_dict
    from neuromamba.training.module import ModuleOptions, NeuroMambaModule

    args = parse_args(["--downstream_task", "sex", "--embed_dim", "16", "--depth", "1", "--d_state", "8",
                       "--headdim", "16", "--img_size", "24", "24", "24", "4", "--learning_rate", "3e-3",
                       "--label_smoothing", "0.2"])
    module = NeuroMambaModule(args_to_dict(args), num_classes=2)
    assert isinstance(module.options, ModuleOptions)
    assert (module.options.learning_rate, module.options.label_smoothing) == (3e-3, 0.2)
    assert module.spec.model.embed_dim == 16 and module.hparams["config"]["learning_rate"] == 3e-3
    old = ModuleOptions.from_config({"task": "classification", "learning_rate": 1e-3})  # an old config
    assert (old.eval_level, old.chunk_size, old.warmup_ratio) == ("subject", 256, 0.05)
