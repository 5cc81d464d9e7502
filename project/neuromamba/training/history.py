"""One metrics history per run folder: ``metrics.csv`` keeps every epoch across resumes.

Lightning's CSV logger deletes an existing ``metrics.csv`` when a run starts again. Here a
resumed run appends to it instead, after dropping the rows from the checkpoint's step on (they
are logged again when the run continues there), so the file reads as if the run had never
stopped: no row twice, none missing.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

METRICS_FILE = "metrics.csv"


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # keep the earlier history (Lightning deletes it)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])


class HistoryCSVLogger(CSVLogger):
    """CSVLogger writing ``<save_dir>/metrics.csv`` that continues an existing history."""

    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_history(run_dir: str | Path, resume_step: int) -> int:
    """Drop the rows of ``metrics.csv`` logged at or after optimizer step ``resume_step`` (the
    checkpoint's global step: everything from there is logged again by the resumed run, which
    also continues mid-epoch); rank 0 only. Returns how many rows were kept. Rows of finished
    epochs carry a step below it (Lightning logs an epoch's end at its last step)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if row.get("step") in (None, "") or int(float(row["step"])) < resume_step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
    return len(kept)


class ContinueHistory(pl.Callback):
    """A resumed fit continues the run's metrics.csv: once its checkpoint is restored (so a
    resume that fails before leaves the history as it was), the rows logged at or after the
    restored step are dropped; the run logs them again."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:
            truncate_history(self.run_dir, trainer.global_step)
