"""One metrics history per run folder: ``metrics.csv`` keeps every epoch across resumes.

Lightning's CSV logger deletes an existing ``metrics.csv`` when a run starts again. Here a
resumed run appends to it instead, after dropping the rows of the epoch the checkpoint did not
finish (they are logged again when that epoch is replayed), so the file reads as if the run
had never stopped.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

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


def truncate_history(run_dir: str | Path, first_unfinished_epoch: int) -> int:
    """Drop the rows of ``metrics.csv`` from ``first_unfinished_epoch`` on (rank 0 only);
    returns how many rows were kept. Rows without an epoch (test results) of earlier epochs
    are kept with them."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept, epoch = [], -1
    for row in rows:
        if row.get("epoch") not in (None, ""):
            epoch = int(float(row["epoch"]))
        if epoch >= first_unfinished_epoch:
            break
        kept.append(row)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
    return len(kept)
