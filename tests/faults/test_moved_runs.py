"""Run folders are relocatable. A finished run folder moved with `mv` and then resumed
(--resume_ckpt_path last under its new name) lost its best checkpoint's score (Lightning drops
it when the folder changed, so the next epoch became "best" whatever its loss); --test_only on
its checkpoint was refused with a path inside the old folder."""
import csv
import shutil

import torch
import yaml

from test_bad_input import run_command
from test_finished_runs import TINY


def _val_losses(run_dir) -> dict:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {int(r["epoch"]): float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")}


def test_a_moved_run_folder_resumes_and_tests_in_its_new_place(tmp_path):
    args = TINY + ["--dummy_num_subjects", "12", "--train_split", "0.5", "--val_split", "0.25"]
    code, out = run_command("main", args + ["--max_epochs", "2", "--output_dir", tmp_path / "old",
                                            "--run_name", "r"])
    assert code == 0, out[-2000:]
    shutil.move(tmp_path / "old", tmp_path / "moved")  # the whole output folder, renamed
    shutil.move(tmp_path / "moved" / "r", tmp_path / "moved" / "r2")  # and the run folder
    run_dir = tmp_path / "moved" / "r2"

    code, out = run_command("main", args + ["--max_epochs", "4", "--output_dir", tmp_path / "moved",
                                            "--run_name", "r2", "--resume_ckpt_path", "last"])
    assert code == 0, out[-2000:]
    assert "dirpath has changed" not in out and str(tmp_path / "old") not in out
    losses = _val_losses(run_dir)
    assert sorted(losses) == [0, 1, 2, 3]
    best_files = sorted(p.name for p in (run_dir / "checkpoints").glob("best-*.ckpt"))
    assert len(best_files) == 1, best_files  # one best, chosen over all four epochs
    best_epoch = min(losses, key=losses.get)
    assert best_files[0].startswith(f"best-{best_epoch:02d}-"), (best_files, losses)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    callback = next(v for k, v in state["callbacks"].items() if k.startswith("RunCheckpoint"))
    assert callback["dirpath"] == str(run_dir / "checkpoints")
    assert abs(float(callback["best_model_score"]) - losses[best_epoch]) < 1e-6

    # --test_only on the moved checkpoint finds its run's split file in the new place.
    shutil.move(tmp_path / "moved", tmp_path / "again")
    code, out = run_command("main", args + ["--output_dir", tmp_path / "eval", "--run_name", "t",
                                            "--test_only", "--test_ckpt_path",
                                            tmp_path / "again" / "r2" / "checkpoints" / "best.ckpt"])
    assert code == 0, out[-2000:]
    used = yaml.safe_load((tmp_path / "eval" / "t" / "args.yaml").read_text())["split_file"]
    assert used.startswith(str(tmp_path / "again" / "r2" / "splits")), used


def test_a_resume_that_fails_before_training_leaves_the_history_as_it_was(tmp_path):
    """The history was cut to the checkpoint's step when the trainer was built: a resume that
    then failed (here: before its first step) lost the finished run's later rows, its test row
    among them. Now the rows are dropped only once the checkpoint is restored and training
    starts."""
    import pytorch_lightning as pl
    import pytest

    from neuromamba.cli import parse_args, parse_run
    from neuromamba.training.runner import run

    args = TINY + ["--dummy_num_subjects", "12", "--train_split", "0.5", "--val_split", "0.25",
                   "--output_dir", str(tmp_path), "--run_name", "r"]
    code, out = run_command("main", args + ["--max_epochs", "1"])
    assert code == 0, out[-2000:]
    before = (tmp_path / "r" / "metrics.csv").read_bytes()
    assert b"test/loss" in before

    class FailsBeforeTraining(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            raise RuntimeError("stopped before the first step")

    with pytest.raises(RuntimeError, match="before the first step"):
        run(parse_run(args + ["--max_epochs", "2", "--resume_ckpt_path", "last"]),
            extra_callbacks=[FailsBeforeTraining()])
    assert (tmp_path / "r" / "metrics.csv").read_bytes() == before
