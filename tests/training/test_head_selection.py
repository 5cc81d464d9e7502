"""--clf_head_version auto: candidate heads trained on one frozen backbone pass, the head kept
chosen on validation only, recorded in summary.json and the checkpoint; --recipe tuned with
--load_model_path is the one fine-tuning command that uses it."""
import json
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from neuromamba.cli import parse_args, parse_run
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "8", "--accelerator", "cpu", "--no_progress_bar",
        "--dummy_num_subjects", "16", "--batch_size", "4", "--seed", "7", "--recipe", "tuned"]
LABELS = ["--downstream_task", "sex", "--train_split", "0.5", "--val_split", "0.25"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto")
    result = run(parse_run(TINY + ["--pretraining", "--max_epochs", "1", "--output_dir", str(out),
                                   "--run_name", "pre"]))
    return Path(result["run_dir"]) / "checkpoints" / "last.ckpt"


def test_the_tuned_recipe_fine_tunes_a_pretrained_backbone_with_auto(pretrained):
    args = parse_args(TINY + LABELS + ["--load_model_path", str(pretrained)])
    assert args.clf_head_version == "auto" and args.freeze_feature_extractor
    assert args.learning_rate == pytest.approx(5e-4)
    assert any("clf_head_version auto" in d for d in args.departures)
    scratch = parse_args(TINY + LABELS)  # from scratch the recipe's own head, nothing frozen
    assert scratch.clf_head_version == "attention" and not scratch.freeze_feature_extractor
    named = parse_args(TINY + LABELS + ["--load_model_path", str(pretrained), "--clf_head_version", "linear"])
    assert named.clf_head_version == "linear"  # a flag wins over the recipe


def test_auto_needs_a_frozen_backbone_and_validation_subjects(pretrained):
    with pytest.raises(ValueError, match="frozen backbone"):
        parse_args(TINY + LABELS + ["--recipe", "paper", "--clf_head_version", "auto"])
    with pytest.raises(ValueError, match="validation subjects"):
        parse_args(TINY + ["--downstream_task", "sex", "--val_split", "0", "--load_model_path", str(pretrained)])


class _BackbonePasses(Callback):
    """Backbone forwards per training batch (the candidates must share one)."""

    def __init__(self):
        self.per_batch, self._calls, self._handle = [], 0, None

    def on_fit_start(self, trainer, module):
        def count(*_):
            self._calls += 1
        self._handle = module.model.register_forward_hook(count)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._calls = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.per_batch.append(self._calls)


def test_auto_trains_every_candidate_on_one_backbone_pass_and_keeps_the_best_on_validation(pretrained, tmp_path):
    from neuromamba.training.module import NeuroMambaModule

    passes = _BackbonePasses()
    result = run(parse_run(TINY + LABELS + ["--load_model_path", str(pretrained), "--max_epochs", "2",
                                            "--output_dir", str(tmp_path), "--run_name", "auto"]), [passes])
    assert passes.per_batch and set(passes.per_batch) == {1}
    run_dir = Path(result["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    choice = summary["head_choice"]
    assert set(choice["candidates"]) == {"linear", "attention", "connectivity"}
    losses = {name: m["loss"] for name, m in choice["candidates"].items()}
    # chosen on validation: the lowest validation loss of the best checkpoint's epoch, which is
    # the run's own val/loss there
    assert choice["chosen"] == min(losses, key=losses.get)
    assert choice["epoch"] == summary["best_epoch"]
    assert summary["best_metrics"]["val/loss"] == pytest.approx(losses[choice["chosen"]], rel=1e-5)
    # every candidate's figures are logged per epoch too
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert all(f"val/{name}/auroc" in header for name in losses)
    # the kept head is what the module tests with and what its checkpoint rebuilds
    module = result["module"]
    assert module.head_candidates is None
    kept_class = type(module.head).__name__
    best = run_dir / "checkpoints" / "best.ckpt"
    assert torch.load(best, weights_only=True)["head_choice"]["chosen"] == choice["chosen"]
    again = NeuroMambaModule.from_checkpoint(str(best))
    assert type(again.head).__name__ == kept_class and again.head_candidates is None
    # --test_only needs none of the fine-tuning flags: the checkpoint names its head
    plain = [f for f in TINY if f not in ("--recipe", "tuned")]
    tested = run(parse_run(plain + LABELS + ["--test_only", "--test_ckpt_path", str(best),
                                             "--output_dir", str(tmp_path), "--run_name", "test"]))
    assert tested["metrics"]["test/auroc"] == pytest.approx(result["metrics"]["test/auroc"])
    assert type(tested["module"].head).__name__ == kept_class


@pytest.mark.slow
def test_auto_under_two_ddp_processes_keeps_one_head_and_tests_like_one_process(pretrained, tmp_path):
    """Each candidate's validation clips are gathered from both ranks, so both choose the same
    head; testing the best checkpoint in one process gives the run's own test figures."""
    import os
    import sys

    from process_helpers import run_process_group

    project = Path(__file__).resolve().parents[2] / "project"
    env = {**os.environ, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"}
    common = [sys.executable, str(project / "main.py"), *TINY, *LABELS, "--load_model_path", str(pretrained),
              "--output_dir", str(tmp_path)]
    proc = run_process_group(common + ["--strategy", "ddp", "--devices", "2", "--max_epochs", "1",
                                       "--run_name", "ddp"], env=env, timeout=400, what="ddp auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    kept = summary["head_choice"]["chosen"]
    assert f"--clf_head_version auto kept {kept}" in proc.stdout + proc.stderr
    best = tmp_path / "ddp" / "checkpoints" / "best.ckpt"
    one = run(parse_run(TINY + LABELS + ["--load_model_path", str(pretrained), "--test_only", "--test_ckpt_path",
                                         str(best), "--output_dir", str(tmp_path), "--run_name", "one"]))
    for key, value in summary["test_metrics"].items():
        assert one["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
