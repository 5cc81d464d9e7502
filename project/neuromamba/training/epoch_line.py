"""One console line per epoch for logs without a progress bar (``--no_progress_bar``: cluster
jobs), naming the epoch's training loss and validation metrics:

    [neuromamba] epoch 3/10: train/loss 0.6541 | val/loss 0.6012 val/auroc 0.8125 (best val/loss) | 12.3 s
"""
from __future__ import annotations

import math
import time

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only

# What the line shows of callback_metrics, in this order (what a run of the task logs).
SHOWN = ("train/loss_epoch", "val/loss", "val/auroc", "val/balanced_acc", "val/acc", "val/mae",
         "val/mae_orig", "val/pearson_r")


def _value(metrics: dict, key: str):
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def epoch_line(epoch: int, max_epochs: int, metrics: dict, monitor: str | None, improved: bool,
               seconds: float) -> str:
    parts = []
    for key in SHOWN:
        value = _value(metrics, key)
        if value is not None:
            parts.append(f"{key.replace('_epoch', '')} {value:.4f}")
    train = [p for p in parts if p.startswith("train/")]
    val = [p for p in parts if p.startswith("val/")]
    best = f" (best {monitor})" if improved and monitor else ""
    text = " | ".join(filter(None, [" ".join(train), " ".join(val) + best if val else "no validation this epoch"]))
    of = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return f"[neuromamba] epoch {epoch + 1}{of}: {text} | {seconds:.1f} s"


class EpochLine(pl.Callback):
    """Prints :func:`epoch_line` at the end of every training epoch (after its validation)."""

    def __init__(self, monitor: str | None):
        self.monitor = monitor
        self._started = None
        self._best = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = dict(trainer.callback_metrics)
        improved = False
        score = _value(metrics, self.monitor) if self.monitor else None
        if score is not None and math.isfinite(score):
            checkpoint = trainer.checkpoint_callback
            mode = getattr(checkpoint, "mode", "min")
            improved = self._best is None or (score < self._best if mode == "min" else score > self._best)
            if improved:
                self._best = score
        seconds = time.monotonic() - (self._started or time.monotonic())
        print(epoch_line(trainer.current_epoch, trainer.max_epochs, metrics, self.monitor, improved,
                         seconds), flush=True)
