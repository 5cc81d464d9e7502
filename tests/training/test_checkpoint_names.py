"""The best checkpoint has a stable name (best.ckpt), a run folder stands for its checkpoint,
and a missing checkpoint is refused naming what its folder holds."""
import os
from pathlib import Path

import pytest

from neuromamba.cli import parse_args, parse_run
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--downstream_task", "sex", "--dummy_num_subjects", "10", "--batch_size", "4", "--seed", "3"]


def test_best_alias_run_folder_and_missing_checkpoints(tmp_path):
    result = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--run_name", "r", "--max_epochs", "2"]))
    folder = Path(result["run_dir"]) / "checkpoints"
    alias = folder / "best.ckpt"
    assert alias.is_symlink() and os.readlink(alias).startswith("best-")
    assert alias.resolve() == Path(result["trainer"].checkpoint_callback.best_model_path).resolve()
    # a run folder stands for its best (test, fine-tune) or last (resume) checkpoint
    args = parse_args(TINY + ["--test_only", "--test_ckpt_path", str(tmp_path / "r")])
    assert args.test_ckpt_path == str(alias)
    assert parse_args(TINY + ["--resume_ckpt_path", str(tmp_path / "r")]).resume_ckpt_path == str(folder / "last.ckpt")
    # the documented name works; a wrong one lists what is there
    parse_args(TINY + ["--test_only", "--test_ckpt_path", str(alias)])
    with pytest.raises(FileNotFoundError, match=r"no such file; .* holds: best-.*\.ckpt, best\.ckpt, last\.ckpt"):
        parse_args(TINY + ["--test_only", "--test_ckpt_path", str(folder / "best-00.ckpt")])


def test_bad_data_leaves_no_run_folder(tmp_path, capsys):
    import main

    from neuromamba.data.dummy import DummySpec, write_dummy_runs

    write_dummy_runs(tmp_path / "h5", DummySpec(num_subjects=6, img_size=(24, 24, 24), num_frames=8, seed=1))
    argv = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16", "--accelerator", "cpu",
            "--pretraining", "--dataset_name", "HCP", "--image_path", str(tmp_path / "h5"),
            "--img_size", "30", "30", "30", "4", "--output_dir", str(tmp_path / "runs"), "--run_name", "bad"]
    assert main.main(argv) == 2
    assert "--img_size" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()


def test_last_ckpt_is_the_last_state_even_when_the_last_epochs_did_not_improve(tmp_path, monkeypatch):
    import torch

    from neuromamba.training.trainer import RunCheckpoint

    # only the first epoch "improves" the monitor: Lightning alone then left last.ckpt at epoch 0
    monkeypatch.setattr(RunCheckpoint, "check_monitor_top_k",
                        lambda self, trainer, current=None: trainer.current_epoch == 0)
    result = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--run_name", "r", "--max_epochs", "3"]))
    trainer = result["trainer"]
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == trainer.global_step and last["epoch"] == 2
    best = torch.load(tmp_path / "r" / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 0  # the best stayed behind, as it should
