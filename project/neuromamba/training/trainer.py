"""Build the Lightning Trainer (strategy, loggers, callbacks) from validated flags.

Multi-node launches rely on Lightning's own cluster environments (SLURM via ``srun``,
torchelastic via ``torchrun``); nothing here parses ranks by hand.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from neuromamba.training.checkpoint_io import AtomicCheckpointIO
from neuromamba.training.epoch_line import EpochLine
from neuromamba.training.interrupt import InterruptNotice, ResumeMidEpoch
from neuromamba.training.history import METRICS_FILE, ContinueHistory, HistoryCSVLogger
from neuromamba.training.loggers import EXTRA_LOGGERS
from neuromamba.training.outputs import TestOutputsWriter
from neuromamba.training.strategies import build_strategy

# What each task's "best" checkpoint minimises by default (--monitor/--monitor_mode change it).
# Classification uses the validation cross-entropy rather than AUROC: on small validation sets
# AUROC saturates at 1.0 within a few epochs and the first tie would be kept as "best".
MONITORS = {
    "pretraining": ("val/loss", "min"),
    "classification": ("val/loss", "min"),
    "regression": ("val/mse", "min"),
}


def monitor_for(run) -> tuple[str, str]:
    """(metric, min|max) that picks the best checkpoint: --monitor, else the task's own."""
    monitor, mode = MONITORS[run.task.task]
    chosen = run.trainer.monitor
    if chosen:
        monitor = chosen if "/" in chosen else f"val/{chosen}"
        mode = run.trainer.monitor_mode or ("max" if monitor.split("/")[-1] in MAXIMISED else "min")
    return monitor, mode


MAXIMISED = {"auroc", "acc", "balanced_acc", "pearson_r"}


def _prepare_history(resuming: bool, run_dir: Path) -> None:
    """Resuming continues metrics.csv (ContinueHistory drops the rows from the checkpoint's step
    on once the checkpoint is restored: they are logged again); another run started in a
    folder that has one moves it to metrics.previous.csv. Rank 0 only: one file-system owner."""
    old = run_dir / METRICS_FILE
    if not old.exists() or rank_zero_only.rank != 0 or resuming:
        return
    os.replace(old, run_dir / "metrics.previous.csv")


def build_loggers(run, run_dir: Path) -> list:
    # metrics.csv in the run folder always exists, whatever else is chosen.
    _prepare_history(bool(run.checkpoints.resume_ckpt_path), run_dir)
    loggers = [HistoryCSVLogger(save_dir=str(run_dir), name="", version="")]
    extra = EXTRA_LOGGERS[run.trainer.loggername]
    if extra is not None:
        loggers.append(extra(run.trainer, run_dir))
    return loggers


BEST_ALIAS = "best.ckpt"


class RunCheckpoint(ModelCheckpoint):
    """Lightning's checkpointing, plus a stable name for the best checkpoint: ``best.ckpt``, a
    link to the current ``best-EE-SS.ckpt`` (like Lightning's ``last.ckpt``), replaced
    atomically each time the best changes, so documented commands can name it."""

    # Lightning saves last.ckpt only when a top-k checkpoint was saved at the same step, so after
    # an epoch that did not improve the monitor last.ckpt held an older state. Here it always
    # holds the newest: after every validation, and after an epoch without one.
    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):  # else the top-k comes after this
            self._ensure_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._ensure_last(trainer)

    def _ensure_last(self, trainer) -> None:
        if (self.save_last and not self._should_skip_saving_checkpoint(trainer)
                and self._last_global_step_saved != trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict) -> None:
        """A run folder moved or renamed since the checkpoint was written: its best score and
        top-k are those of the files that moved with it, so rebase their paths here. (Lightning
        keeps only ``best_model_path`` when the folder changed, and the next epoch would then be
        "best" whatever its score: the test would run on it.) A resume into a folder without
        the old files keeps Lightning's behaviour."""
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new and state_dict.get("best_model_path"):
            def rebased(path):
                return str(Path(new) / Path(path).name) if path and Path(path).parent == Path(old) else path

            if Path(rebased(state_dict["best_model_path"])).exists():
                state_dict = {**state_dict, "dirpath": new,
                              "best_model_path": rebased(state_dict["best_model_path"]),
                              "kth_best_model_path": rebased(state_dict.get("kth_best_model_path")),
                              "last_model_path": rebased(state_dict.get("last_model_path")),
                              "best_k_models": {rebased(k): v for k, v in
                                                state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        best = self.best_model_path
        if trainer.is_global_zero and best and Path(best).exists() and Path(best).name != BEST_ALIAS:
            alias = Path(best).parent / BEST_ALIAS
            if alias.is_symlink() and os.readlink(alias) == Path(best).name:
                return  # saving last.ckpt: the best has not changed
            tmp = alias.with_name(f".{BEST_ALIAS}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(Path(best).name)  # relative: the run folder can move
            os.replace(tmp, alias)


def build_callbacks(run, run_dir: Path) -> list:
    monitor, mode = monitor_for(run)
    checkpoint = RunCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best-{epoch:02d}-{step}",
        monitor=monitor, mode=mode, save_top_k=1, save_last=True, auto_insert_metric_name=False,
        enable_version_counter=False)  # last.ckpt is replaced, never joined by a last-v1.ckpt
    callbacks = [checkpoint, TestOutputsWriter(run_dir), InterruptNotice(run_dir), ResumeMidEpoch(),
                 ContinueHistory(run_dir)]
    if run.trainer.loggername != "none":
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if run.trainer.no_progress_bar:  # a log file: one line per epoch with its validation metrics
        callbacks.append(EpochLine(monitor))
    else:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return callbacks


def trainer_kwargs(run, run_dir: Path, extra_callbacks=()) -> dict:
    """The Trainer's arguments for ``run`` (a run_config.RunConfig)."""
    hardware, options = run.hardware, run.trainer
    kwargs = dict(
        accelerator="gpu" if hardware.accelerator == "cuda" else hardware.accelerator,
        devices=hardware.devices,
        num_nodes=hardware.num_nodes,
        strategy=build_strategy(hardware),
        precision=hardware.lightning_precision,
        max_epochs=options.max_epochs,
        max_steps=options.max_steps,
        accumulate_grad_batches=options.gradient_accumulation_steps,
        gradient_clip_val=options.clip_grad_norm,
        gradient_clip_algorithm="norm" if options.clip_grad_norm else None,
        check_val_every_n_epoch=options.check_val_every_n_epoch,
        log_every_n_steps=options.log_every_n_steps,
        num_sanity_val_steps=options.num_sanity_val_steps,
        deterministic=options.deterministic,
        default_root_dir=str(run_dir),
        logger=build_loggers(run, run_dir),
        callbacks=build_callbacks(run, run_dir) + list(extra_callbacks),
        enable_progress_bar=not options.no_progress_bar,
        # Lightning's table has an all-zero FLOPs column; the module prints its own summary.
        enable_model_summary=False,
    )
    plugins = []
    if not hardware.uses_deepspeed:  # DeepSpeed writes its own checkpoint folders
        plugins.append(AtomicCheckpointIO())
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        # SIGUSR1 is ours (training/interrupt.py: last.ckpt of the step, then requeue), not
        # Lightning's auto-requeue, whose hpc_ckpt files bypass the atomic writer and run folder.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    if plugins:
        kwargs["plugins"] = plugins
    kwargs.update(options.limits)
    return kwargs


def build_trainer(run, run_dir: Path, extra_callbacks=(), steps_per_epoch: int | None = None) -> pl.Trainer:
    """``steps_per_epoch`` (when known) caps the logging interval: an epoch shorter than
    --log_every_n_steps still logs its training loss once (and Lightning has nothing to warn)."""
    kwargs = trainer_kwargs(run, run_dir, extra_callbacks)
    if steps_per_epoch:
        kwargs["log_every_n_steps"] = max(1, min(kwargs["log_every_n_steps"], int(steps_per_epoch)))
    return pl.Trainer(**kwargs)
