"""SIGTERM (preemption, a job's time limit) mid-epoch: a checkpoint of that very step, the
resume command, exit 143; resuming from it ends where an uninterrupted run ends."""
import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch

from neuromamba.cli import parse_args, parse_run, run_config_of
from neuromamba.training.interrupt import resume_command
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--pretraining", "--dummy_num_subjects", "8", "--batch_size", "2", "--seed", "5",
        "--max_epochs", "2", "--learning_rate", "1e-2", "--limit_test_batches", "1"]


class _SigtermAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_mid_epoch_checkpoints_that_step_and_exits_143(tmp_path, capsys):
    import main

    full = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--run_name", "full"]))
    steps = full["trainer"].global_step
    mid = 2  # inside the first epoch (6 batches), far from its end
    args = parse_args(TINY + ["--output_dir", str(tmp_path), "--run_name", "cut"])
    try:
        run(run_config_of(args), extra_callbacks=[_SigtermAt(mid)])
        raise AssertionError("SIGTERM did not stop the run")
    except SystemExit:
        pass
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == mid
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM at epoch 0, step {mid}; saved {last}; resume with: " in err
    assert f"--resume_ckpt_path {last}" in err
    # resumed, it ends where the uninterrupted run ends, with the same weights
    resumed = run(parse_run(TINY + ["--output_dir", str(tmp_path), "--run_name", "cut",
                                     "--resume_ckpt_path", "last"]))  # what a requeued job runs
    assert resumed["trainer"].global_step == steps
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(last, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    # one history: the same rows as the uninterrupted run, none twice (a learning-rate row and
    # the parameter count were repeated), none lost (the epoch's rows before the signal)
    # and the same values: the interrupted epoch's train/loss_epoch averages all its steps,
    # before and after the signal, as the uninterrupted run's does (it averaged only the
    # steps after the resume: 0.6540 vs 0.6608)
    assert _history(tmp_path / "cut") == _history(tmp_path / "full")


TIMINGS = ("tok/s",)  # wall-clock figures: the only values allowed to differ


def _history(run_dir):
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["epoch"], r["step"], {k: v for k, v in sorted(r.items())
                                     if v not in ("", None) and k not in ("epoch", "step", *TIMINGS)})
            for r in rows]


def test_the_command_line_exits_143_on_sigterm(tmp_path, monkeypatch):
    import main
    from neuromamba.training import runner

    real = runner.build_trainer
    monkeypatch.setattr(runner, "build_trainer", lambda *a, **k: real(*a[:2], [_SigtermAt(1)]))
    code = main.main(TINY + ["--output_dir", str(tmp_path), "--run_name", "r"])
    assert code == 143
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


def test_resume_command_replaces_an_earlier_resume_flag():
    cmd = resume_command(Path("/r/last.ckpt"), ["project/main.py", "--pretraining", "--resume_ckpt_path",
                                                "/old.ckpt", "--seed", "3"])
    assert cmd.endswith("project/main.py --pretraining --seed 3 --resume_ckpt_path /r/last.ckpt")


class _SignalAt(pl.Callback):
    def __init__(self, step, sig):
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


def test_sigusr1_checkpoints_the_step_and_requeues_the_slurm_job(tmp_path, capsys, monkeypatch):
    """SLURM's --signal=SIGUSR1@90: the same checkpoint and resume line as SIGTERM, then
    ``scontrol requeue <job>`` (a stand-in scontrol records its arguments)."""
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol_args'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    args = parse_args(TINY + ["--output_dir", str(tmp_path), "--run_name", "usr1"])
    try:
        run(run_config_of(args), extra_callbacks=[_SignalAt(2, signal.SIGUSR1)])
        raise AssertionError("SIGUSR1 did not stop the run")
    except SystemExit:
        pass
    last = tmp_path / "usr1" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    err = capsys.readouterr().err
    assert "stopped by SIGUSR1 at epoch 0, step 2" in err and f"--resume_ckpt_path {last}" in err
    assert "requeued SLURM job 4242; it resumes with --resume_ckpt_path last" in err
    assert (tmp_path / "scontrol_args").read_text().split() == ["requeue", "4242"]
