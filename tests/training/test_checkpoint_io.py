"""A checkpoint write that fails (disk full) never damages the checkpoint already there."""
import errno
from pathlib import Path

import pytest
import torch

from neuromamba.training.checkpoint_io import AtomicCheckpointIO


def test_failed_write_leaves_the_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(4)}, "epoch": 1}, path)
    good = path.read_bytes()

    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # half of the bytes made it, then the disk filled up
            fh.truncate(Path(f).stat().st_size // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="no space left to write the checkpoint .*last.ckpt"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(4)}, "epoch": 2}, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_trainer_uses_the_atomic_writer(tmp_path):
    from neuromamba.cli import parse_run
    from neuromamba.training.trainer import build_trainer

    trainer = build_trainer(parse_run(["--accelerator", "cpu", "--pretraining", "--no_progress_bar"]), tmp_path)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_truncated_checkpoint_given_to_resume_is_one_line(tmp_path):
    from neuromamba.cli import parse_args

    bad = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "blob": torch.zeros(1000)}, bad)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"--resume_ckpt_path .*last\.ckpt: not a PyTorch checkpoint"):
        parse_args(["--accelerator", "cpu", "--pretraining", "--resume_ckpt_path", str(bad)])
