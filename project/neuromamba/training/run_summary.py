"""summary.json and training_curves.png: what a run folder says about its run at a glance."""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from pathlib import Path

from neuromamba.fileio import atomic_write_text
from neuromamba.training.outputs import plot_training_curves


def _epoch_rows(metrics_csv: Path) -> dict:
    """{epoch: {metric: value}} of the validation/epoch-level rows of metrics.csv."""
    out: dict = {}
    if not metrics_csv.is_file():
        return out
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch") in (None, ""):
                continue
            values = {key: float(value) for key, value in row.items() if value not in (None, "")
                      and (key.startswith("val/") or key.endswith("_epoch"))}
            if values:  # test rows carry an epoch too, but belong to no epoch of training
                out.setdefault(int(float(row["epoch"])), {}).update(values)
    return out


def _finite(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def versions() -> dict:
    import numpy
    import pytorch_lightning
    import torch

    import neuromamba

    return {"neuromamba": neuromamba.__version__, "torch": torch.__version__,
            "pytorch_lightning": pytorch_lightning.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def write_run_summary(run_dir, trainer, datamodule, test_metrics: dict, started: float,
                      monitor: str, spec: dict | None = None, head_choice: dict | None = None) -> Path:
    """Rank 0 writes ``summary.json`` (and ``training_curves.png`` when epochs were logged)."""
    run_dir = Path(run_dir)
    epochs = _epoch_rows(run_dir / "metrics.csv")
    callback = trainer.checkpoint_callback
    best_path = getattr(callback, "best_model_path", "") or ""
    best_epoch = None
    if best_path and getattr(callback, "best_model_score", None) is not None:
        score = float(callback.best_model_score)
        matches = [e for e, v in epochs.items() if v.get(monitor) is not None
                   and math.isclose(v[monitor], score, rel_tol=1e-6, abs_tol=1e-9)]
        best_epoch = matches[0] if matches else None
    last_epoch = max(epochs) if epochs else None
    summary = {
        "run_dir": str(run_dir),
        # The run spec (model, input, recipe and every departure from the paper).
        "recipe": (spec or {}).get("recipe"),
        "departures": (spec or {}).get("departures", []),
        "spec": spec,
        "monitor": monitor,
        "best_epoch": best_epoch,
        "best_metrics": {k: _finite(v) for k, v in epochs.get(best_epoch, {}).items()},
        "final_epoch": last_epoch,
        "final_metrics": {k: _finite(v) for k, v in epochs.get(last_epoch, {}).items()},
        "test_metrics": {k: _finite(v) for k, v in (test_metrics or {}).items()},
        # --clf_head_version auto: the head kept, and every candidate's validation figures
        "head_choice": None if head_choice is None else {
            **head_choice, "candidates": {name: {k: _finite(v) for k, v in metrics.items()}
                                          for name, metrics in head_choice["candidates"].items()}},
        # Paths of files inside the run folder are relative to it: the folder can move.
        "checkpoints": {"best": _inside(best_path, run_dir) if best_path else None,
                        "last": "checkpoints/last.ckpt"
                        if (run_dir / "checkpoints" / "last.ckpt").exists() else None},
        "split_sizes": {name: {"subjects": len(set(datamodule.clip_subjects(name))),
                               "clips": len(datamodule.datasets[name])}
                        for name in ("train", "val", "test") if name in datamodule.datasets},
        "split_file": _inside(datamodule.split_path, run_dir) if datamodule.split_path else None,
        "global_step": int(trainer.global_step),
        "wall_time_s": round(time.time() - started, 1),
        "versions": versions(),
    }
    path = run_dir / "summary.json"
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    plot_training_curves(run_dir / "training_curves.png", run_dir / "metrics.csv", monitor)
    return path


def _inside(path, run_dir: Path) -> str:
    """``path`` relative to the run folder when it lies inside it (else as it is)."""
    try:
        return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return str(path)
