"""End to end on tiny Dummy volumes (24^3 x 4, patch 6x6x6x2 -> 128 tokens), in-process."""
import csv
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuromamba.checkpoints import read_state_dict
from neuromamba.cli import parse_args, parse_run, run_config_of
from neuromamba.training.module import NonFiniteLossError
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--patch_size", "6", "6", "6", "2",
        "--accelerator", "cpu", "--no_progress_bar", "--log_every_n_steps", "1",
        "--calc_loss_without_background", "--seed", "7"]


def run_cli(out_dir, name, *flags, callbacks=()):
    return run(parse_run(TINY + ["--output_dir", str(out_dir), "--run_name", name, *flags]), callbacks)


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows, key):
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    result = run_cli(out, "pre", "--pretraining", "--use_autoregressive", "--dummy_num_subjects", "8",
                     "--batch_size", "2", "--max_epochs", "3", "--learning_rate", "2e-2")
    return result


def _val_next_token_loss(module, args):
    from neuromamba.training.runner import build_datamodule

    dm = build_datamodule(run_config_of(args), Path(args.run_dir))
    dm.setup("fit")
    module.eval()
    with torch.no_grad():
        losses = [float(module.model.next_token_loss(module.model(dm.on_after_batch_transfer(b, 0)["fmri"]))) for b in dm.val_dataloader()]
    return float(np.mean(losses))


def test_pretraining_loss_decreases_and_run_folder(pretrained):
    from neuromamba.cli import args_to_dict
    from neuromamba.training.module import NeuroMambaModule

    run_dir = Path(pretrained["run_dir"])
    assert len(column(read_metrics(run_dir), "train/loss_step")) >= 9
    args = parse_args(TINY + ["--pretraining", "--dummy_num_subjects", "8", "--output_dir", str(run_dir.parent),
                              "--run_name", "pre"])
    args.run_dir = str(run_dir)
    untrained = NeuroMambaModule(args_to_dict(args))
    trained_loss = _val_next_token_loss(pretrained["module"], args)
    assert trained_loss < 0.8 * _val_next_token_loss(untrained, args)
    # Lightning weights the epoch mean by batch size, this helper averages batches
    assert column(read_metrics(run_dir), "val/loss")[-1] == pytest.approx(trained_loss, rel=2e-2)
    for name in ("args.yaml", "metrics.csv", "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list((run_dir / "splits").glob("*.txt"))
    assert np.isfinite(pretrained["metrics"]["test/loss"])
    # Lightning checkpoints are plain tensors + primitives: no unpickling needed.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "model.embedder.projection" in ckpt["state_dict"] and "rng_states" in ckpt


def _backbone_after(result):
    return {k: v.detach().clone() for k, v in result["module"].model.state_dict().items()}


@pytest.mark.parametrize("head", ["linear", "mamba"])
@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_finetune_each_head_and_mode(tmp_path, pretrained, head, mode):
    ckpt = Path(pretrained["run_dir"]) / "checkpoints" / "last.ckpt"
    flags = ["--downstream_task", "sex", "--dummy_num_subjects", "10", "--batch_size", "4",
             "--max_epochs", "2", "--learning_rate", "3e-3", "--load_model_path", str(ckpt),
             "--clf_head_version", head, "--label_smoothing", "0.1"]
    if mode == "frozen":
        flags.append("--freeze_feature_extractor")
    result = run_cli(tmp_path, "ft", *flags)
    pretrained_backbone = {k: v for k, v in read_state_dict(ckpt).items() if not k.startswith("output_layer")}
    after = _backbone_after(result)
    assert set(after) == set(pretrained_backbone)
    identical = all(torch.equal(after[k], pretrained_backbone[k]) for k in after)
    assert identical == (mode == "frozen")
    module = result["module"]
    if mode == "frozen":
        assert not module.model.training and all(not p.requires_grad for p in module.model.parameters())
        optimizer_params = {id(p) for g in result["trainer"].optimizers[0].param_groups for p in g["params"]}
        assert optimizer_params == {id(p) for p in module.head.parameters()}
    run_dir = Path(result["run_dir"])
    metrics = result["metrics"]
    assert {"test/acc", "test/balanced_acc", "test/auroc", "test/loss"} <= set(metrics)
    with open(run_dir / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"subject", "target", "predicted", "prob_class0", "prob_class1"} <= set(rows[0])
    assert float(rows[0]["prob_class0"]) + float(rows[0]["prob_class1"]) == pytest.approx(1.0, abs=1e-5)
    assert (run_dir / "roc_test.png").exists()
    assert column(read_metrics(run_dir), "test/acc") == [pytest.approx(metrics["test/acc"])]


def test_prompt_tuning_trains_only_prompt_and_head(tmp_path, pretrained):
    ckpt = Path(pretrained["run_dir"]) / "checkpoints" / "last.ckpt"
    torch.manual_seed(0)
    result = run_cli(tmp_path, "prompt", "--downstream_task", "sex", "--dummy_num_subjects", "10", "--stride_between_seq", "1",
                     "--batch_size", "4", "--max_epochs", "1", "--learning_rate", "1e-2",
                     "--load_model_path", str(ckpt), "--prompt_tuning", "--prompt_len", "3")
    module = result["module"]
    pretrained_backbone = {k: v for k, v in read_state_dict(ckpt).items() if not k.startswith("output_layer")}
    after = _backbone_after(result)
    assert all(torch.equal(after[k], pretrained_backbone[k]) for k in after)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"prompt"} | {f"head.{n}" for n, _ in module.head.named_parameters()}
    # the prompt moved away from its initialisation (it received gradients through the frozen backbone)
    assert module.prompt.shape == (3, 16)
    fraction = column(read_metrics(result["run_dir"]), "trainable_param_fraction")
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert fraction == [pytest.approx(n_train / sum(p.numel() for p in module.parameters()))]
    assert fraction[0] < 0.5


def test_prompt_receives_gradient(pretrained):
    # direct check that the prompt is trained: one optimisation step changes it
    from neuromamba.cli import args_to_dict
    from neuromamba.training.module import NeuroMambaModule

    ckpt = Path(pretrained["run_dir"]) / "checkpoints" / "last.ckpt"
    args = parse_args(TINY + ["--downstream_task", "sex", "--load_model_path", str(ckpt), "--prompt_tuning"])
    module = NeuroMambaModule(args_to_dict(args), num_classes=2)
    x = torch.randn(2, 1, 24, 24, 24, 4)
    loss = torch.nn.functional.cross_entropy(module(x), torch.tensor([0, 1]))
    loss.backward()
    assert module.prompt.grad is not None and module.prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.model.parameters())


def test_regression_standardised_targets_and_outputs(tmp_path, pretrained):
    ckpt = Path(pretrained["run_dir"]) / "checkpoints" / "last.ckpt"
    result = run_cli(tmp_path, "reg", "--downstream_task", "age", "--downstream_task_type", "regression",
                     "--dummy_num_subjects", "10", "--batch_size", "4", "--max_epochs", "2",
                     "--learning_rate", "3e-3", "--load_model_path", str(ckpt), "--clf_head_version", "linear")
    run_dir = Path(result["run_dir"])
    module = result["module"]
    mean, std = module.target_stats()
    assert 20 < mean < 80 and std > 1  # Dummy ages are uniform in [20, 80]
    best = torch.load(next((run_dir / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    assert float(best["state_dict"]["target_mean"]) == pytest.approx(mean)
    assert float(best["state_dict"]["target_std"]) == pytest.approx(std)
    m = result["metrics"]
    assert {"test/mse", "test/mae", "test/mse_orig", "test/mae_orig", "test/pearson_r"} <= set(m)
    assert m["test/mae_orig"] == pytest.approx(m["test/mae"] * std, rel=1e-4)
    with open(run_dir / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(20 <= float(r["target"]) <= 80 for r in rows)
    assert float(rows[0]["target"]) == pytest.approx(float(rows[0]["target_standardised"]) * std + mean, rel=1e-5)
    assert (run_dir / "scatter_test.png").exists()


def test_test_only_reproduces_post_fit_test(tmp_path, pretrained):
    ckpt = Path(pretrained["run_dir"]) / "checkpoints" / "last.ckpt"
    fit = run_cli(tmp_path, "fit", "--downstream_task", "sex", "--dummy_num_subjects", "10", "--batch_size", "4",
                  "--max_epochs", "1", "--load_model_path", str(ckpt), "--clf_head_version", "mamba")
    best = next((Path(fit["run_dir"]) / "checkpoints").glob("best-*.ckpt"))
    again = run_cli(tmp_path, "test", "--downstream_task", "sex", "--dummy_num_subjects", "10", "--stride_between_seq", "1",
                    "--batch_size", "4", "--test_only", "--test_ckpt_path", str(best))
    for key in ("test/loss", "test/acc"):
        assert again["metrics"][key] == pytest.approx(fit["metrics"][key], abs=1e-6)


class _PoisonBatch(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            batch["fmri"].fill_(float("nan"))


def test_nan_loss_saves_checkpoint_and_stops(tmp_path):
    with pytest.raises(NonFiniteLossError, match="saved to"):
        run_cli(tmp_path, "nan", "--pretraining", "--dummy_num_subjects", "6", "--batch_size", "2",
                "--max_epochs", "2", callbacks=[_PoisonBatch()])
    saved = list((tmp_path / "nan" / "checkpoints").glob("nonfinite-step1.ckpt"))
    assert saved and "state_dict" in torch.load(saved[0], weights_only=True)


class _KillAtStep(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    flags = ["--pretraining", "--dummy_num_subjects", "6", "--batch_size", "4", "--max_epochs", "2",
             "--learning_rate", "1e-2", "--limit_test_batches", "1"]
    full = run_cli(tmp_path, "full", *flags)
    steps_per_epoch = full["trainer"].global_step // 2
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_cli(tmp_path, "killed", *flags, callbacks=[_KillAtStep(steps_per_epoch + 1)])
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == steps_per_epoch
    # no --run_name: resuming <out>/killed/checkpoints/last.ckpt continues in <out>/killed
    resumed = run(parse_run(TINY + ["--output_dir", str(tmp_path), *flags, "--resume_ckpt_path", str(last)]))
    assert Path(resumed["run_dir"]) == tmp_path / "killed"
    assert not list((tmp_path / "killed").glob("metrics.*.csv"))  # one history, no metrics.1.csv
    assert resumed["trainer"].global_step == full["trainer"].global_step
    # metrics.csv holds every epoch once, as the uninterrupted run's does
    def epochs(run_dir):
        rows = read_metrics(run_dir)
        return [(r["epoch"], r["step"]) for r in rows if r.get("train/loss_step")]
    assert epochs(tmp_path / "killed") == epochs(tmp_path / "full")
    assert len(column(read_metrics(tmp_path / "killed"), "val/loss")) == 2
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(last, weights_only=True)["state_dict"]  # overwritten by the resumed run
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    lr_full = full["trainer"].optimizers[0].param_groups[0]["lr"]
    assert resumed["trainer"].optimizers[0].param_groups[0]["lr"] == pytest.approx(lr_full)


def test_multiclass_diagnosis_per_class_auroc(tmp_path):
    result = run_cli(tmp_path, "dx", "--downstream_task", "diagnosis", "--dummy_num_classes", "3",
                     "--dummy_num_subjects", "18", "--train_split", "0.5",
                     "--val_split", "0.2", "--batch_size", "4", "--max_epochs", "1", "--learning_rate", "1e-2")
    m = result["metrics"]
    assert {"test/auroc", "test/auroc_class0", "test/auroc_class1", "test/auroc_class2", "test/balanced_acc"} <= set(m)
    defined = [m[f"test/auroc_class{k}"] for k in range(3) if not np.isnan(m[f"test/auroc_class{k}"])]
    assert m["test/auroc"] == pytest.approx(np.mean(defined))
    assert result["module"].head.fc.out_features == 3
    with open(Path(result["run_dir"]) / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert "prob_class2" in rows[0]
    assert all(sum(float(r[f"prob_class{k}"]) for k in range(3)) == pytest.approx(1.0, abs=1e-5) for r in rows)


def test_run_level_evaluation_for_task_state_labels(tmp_path):
    result = run_cli(tmp_path, "state", "--downstream_task", "state", "--dummy_num_runs", "2",
                     "--dummy_label_level", "run", "--eval_level", "run", "--dummy_num_subjects", "6",
                     "--batch_size", "4", "--max_epochs", "1")
    with open(Path(result["run_dir"]) / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    # one row per (subject, run): the test subject's two runs carry different states
    assert len(rows) == 2 and {r["subject"].split("/")[1] for r in rows} == {"run0", "run1"}
    assert {r["target"] for r in rows} == {"0", "1"}
