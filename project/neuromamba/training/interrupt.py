"""A training stopped from outside: one line saying where it stopped and the exact command to
resume.

* Ctrl-C: the last finished epoch's ``last.ckpt`` is the resume point.
* SIGUSR1 (SLURM's ``--signal=SIGUSR1@90``, sent before the time limit): handled as SIGTERM,
  and under SLURM the job is then requeued (``scontrol requeue``); the requeued job resumes
  with ``--resume_ckpt_path last``.
* SIGTERM (what SLURM and PBS send before killing a job, at preemption or the time limit):
  Lightning stops after the current batch; this callback then writes ``last.ckpt`` of that very
  step (atomically, on every rank as the strategy needs), and prints the resume command. The
  command-line entry then exits 143 (128 + SIGTERM), so a scheduler chaining jobs never takes
  a preempted run for a finished one.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

SIGTERM_EXIT_CODE = 143


def resume_command(checkpoint: Path, argv=None) -> str:
    """The command that started this run, with ``--resume_ckpt_path`` pointing at ``checkpoint``."""
    argv = list(sys.argv if argv is None else argv)
    kept, skip = [], False
    for token in argv[1:]:
        if skip:
            skip = False
            continue
        if token == "--resume_ckpt_path":
            skip = True
            continue
        if token.startswith("--resume_ckpt_path="):
            continue
        kept.append(token)
    program = [sys.executable, argv[0]] if argv and argv[0].endswith(".py") else argv[:1]
    return shlex.join([*program, *kept, "--resume_ckpt_path", str(checkpoint)])


def install_sigusr1(notice: "InterruptNotice") -> None:
    """SIGUSR1 becomes SIGTERM for Lightning (stop after the batch, then the checkpoint and the
    resume line), remembering that a requeue was asked for. Main thread only (Python's rule)."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        return

    def on_usr1(signum, frame):
        notice.requeue_asked = True
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGUSR1, on_usr1)


def requeue_slurm_job() -> str:
    """``scontrol requeue $SLURM_JOB_ID``: the line to print (what was done, or why not)."""
    import os
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):  # an array task is requeued by its array name
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}".rstrip("_")
    if not job:
        return "not a SLURM job, so not requeued"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol requeue {job} failed ({error}); resubmit with the command above"
    if done.returncode != 0:
        return f"scontrol requeue {job} failed: {done.stderr.strip() or done.returncode}; resubmit with the command above"
    return f"requeued SLURM job {job}; it resumes with --resume_ckpt_path last"


class InterruptNotice(pl.Callback):
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.requeue_asked = False
        self._previous_usr1 = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import signal

        if hasattr(signal, "SIGUSR1"):
            self._previous_usr1 = signal.getsignal(signal.SIGUSR1)
        install_sigusr1(self)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        import signal
        import threading

        if self._previous_usr1 is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception) -> None:
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(last)  # every rank: the strategy decides who writes
            if trainer.is_global_zero:
                cause = "SIGUSR1" if self.requeue_asked else "SIGTERM"
                print(f"stopped by {cause} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                      f"saved {last}; resume with: {resume_command(last)}", file=sys.stderr, flush=True)
                if self.requeue_asked:
                    print(requeue_slurm_job(), file=sys.stderr, flush=True)
            return
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        if last.exists():
            how = (f"resume with the same command plus --resume_ckpt_path {last} (it continues "
                   f"from the last finished epoch)")
        else:
            how = "no epoch had finished, so there is no checkpoint: rerun the same command"
        print(f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}; {how}",
              file=sys.stderr, flush=True)


class ResumeMidEpoch(pl.Callback):
    """A fit resumed from a mid-epoch checkpoint (SIGTERM) skips the batches of that epoch it
    had already trained on, so it ends where an uninterrupted run ends. Lightning restores its
    counters after it has started the epoch's data at the first batch; here the sampler is told
    to skip and the epoch's iterator is made again (Lightning < 3: ``fit_loop._data_fetcher``).

    The epoch's running means (``train/loss_epoch``) are kept too: Lightning does not save its
    logged-metric accumulators, so the resumed epoch would average only the steps after the
    resume. The checkpoint carries each epoch-mean accumulator (weighted sum and batch count, as
    this rank holds them: the logged value is rank 0's, train/loss is not synced) and the first
    batch after the resume adds them back; float addition commutes, so the epoch's value is the
    uninterrupted run's bit for bit."""

    def __init__(self):
        self._pending = None  # accumulators of the interrupted epoch, until the first batch

    def state_dict(self) -> dict:
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return {}
        loop = trainer.fit_loop.epoch_loop
        sums = {}
        for key, metric in loop._results.items():
            meta = getattr(metric, "meta", None)
            if meta is not None and meta.on_epoch and meta.is_mean_reduction and metric._computed is None:
                sums[key] = (metric.value.detach().cpu().clone(), metric.cumulated_batch_size.detach().cpu().clone())
        return {"epoch": trainer.current_epoch, "batches_done": loop.batch_progress.current.ready,
                "epoch_sums": sums}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict if state_dict.get("epoch_sums") else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() runs without the trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        loader = trainer.train_dataloader
        sampler, batch_size = getattr(loader, "sampler", None), getattr(loader, "batch_size", None)
        if done <= 0 or done >= trainer.num_training_batches or not hasattr(sampler, "skip") or not batch_size:
            self._pending = None  # not a mid-epoch resume: nothing to continue
            return
        if self._pending and (self._pending["epoch"], self._pending["batches_done"]) != (trainer.current_epoch, done):
            self._pending = None  # accumulators of another point than the one resumed
        sampler.skip = done * batch_size
        fetcher = trainer.fit_loop._data_fetcher
        iter(fetcher)  # the epoch's first batches now come from the skipping sampler
        fetcher.fetched = 0  # the epoch loop adds the batches already done itself

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if not self._pending:
            return
        results = trainer.fit_loop.epoch_loop._results
        for key, (value, count) in self._pending["epoch_sums"].items():
            if key in results:
                metric = results[key]
                metric.value = metric.value + value.to(metric.value.device)
                metric.cumulated_batch_size = metric.cumulated_batch_size + count.to(metric.cumulated_batch_size.device)
        self._pending = None
