"""The run folder: args.yaml, per-subject test predictions, ROC curve / scatter plot.

Layout of ``<output_dir>/<run_name>/``::

    args.yaml             every flag after validation
    splits/split_<dataset>_seed<seed>.txt   subject split (written by the data module)
    label_classes.json    class names in index order (classification; the data module)
    checkpoints/          best-*.ckpt and last.ckpt
    metrics.csv           the CSV logger's epoch/step metrics (always written)
    predictions_test.csv  one row per test subject
    roc_test.png | scatter_test.png
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import yaml

from neuromamba.fileio import atomic_write_bytes
from neuromamba.training.metrics import SubjectTable


def default_run_name(args) -> str:
    """Same name on every rank: the scheduler's job id when there is one, else a timestamp that
    local DDP children inherit through the environment."""
    task = "pretrain" if args.pretraining else f"{args.downstream_task}_{args.downstream_task_type}"
    size = f"E{args.embed_dim}_D{args.depth}"
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID", "").split(".")[0]
    if not job:
        job = os.environ.setdefault("NEUROMAMBA_RUN_STAMP", time.strftime("%Y%m%d-%H%M%S"))
    dataset = "+".join(args.dataset_name) if isinstance(args.dataset_name, list) else args.dataset_name
    return f"{dataset}_{task}_{size}_seed{args.seed}_{job}"


def make_run_dir(output_dir: str, run_name: str) -> Path:
    run_dir = Path(output_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_args_yaml(run_dir: Path, args_dict: dict) -> Path:
    path = Path(run_dir) / "args.yaml"
    atomic_write_bytes(path, yaml.safe_dump(args_dict, sort_keys=True).encode())
    return path


def predictions_rows(table: SubjectTable, task: str, target_mean: float = 0.0,
                     target_std: float = 1.0) -> tuple[list[str], list[list]]:
    """One row per evaluation unit (a subject; ``subject/run`` or ``subject/run/start`` with
    --eval_level run|clip), with the clip-averaged prediction."""
    if task == "classification":
        k = table.outputs.shape[1]
        header = ["subject", "num_clips", "target", "predicted"] + [f"prob_class{i}" for i in range(k)]
        rows = [[s, int(n), int(t), int(np.argmax(p))] + [float(v) for v in p]
                for s, n, t, p in zip(table.subjects, table.num_clips, table.targets, table.outputs)]
    else:
        header = ["subject", "num_clips", "target", "prediction", "target_standardised",
                  "prediction_standardised"]
        rows = [[s, int(n), float(t * target_std + target_mean), float(p[0] * target_std + target_mean),
                 float(t), float(p[0])]
                for s, n, t, p in zip(table.subjects, table.num_clips, table.targets, table.outputs)]
    return header, rows


def write_predictions_csv(path: Path, table: SubjectTable, task: str, target_mean: float = 0.0,
                          target_std: float = 1.0) -> Path:
    header, rows = predictions_rows(table, task, target_mean, target_std)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return Path(path)


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_roc(path: Path, table: SubjectTable, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    y = table.targets.astype(int)
    k = table.outputs.shape[1]
    classes = [1] if k == 2 else list(range(k))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for c in classes:
        positives = y == c
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, table.outputs[:, c])
        auc = roc_auc_score(positives, table.outputs[:, c])
        label = f"AUC {auc:.3f}" if k == 2 else f"class {c} vs rest: AUC {auc:.3f}"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=title or f"subject-level ROC (n={len(y)})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def plot_scatter(path: Path, table: SubjectTable, target_mean: float, target_std: float,
                 title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.targets * target_std + target_mean
    p = table.outputs[:, 0] * target_std + target_mean
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(t, p, s=12)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    r = np.corrcoef(t, p)[0, 1] if len(t) > 1 and t.std() > 0 and p.std() > 0 else float("nan")
    ax.set(xlabel="target", ylabel="prediction", title=title or f"subject-level (n={len(t)}, r={r:.3f})")
    _save_figure(fig, path)
    plt.close(fig)
    return Path(path)


class TestOutputsWriter(pl.Callback):
    """After testing, rank 0 writes predictions_test.csv and the ROC / scatter PNG.

    Runs in ``on_test_end`` because Lightning calls callbacks' ``on_test_epoch_end`` before the
    module's, which is where the subject table is computed.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        table = getattr(pl_module, "test_table", None)
        if table is None or not trainer.is_global_zero or pl_module.task == "pretraining":
            return
        mean, std = pl_module.target_stats()
        write_predictions_csv(self.run_dir / "predictions_test.csv", table, pl_module.task, mean, std)
        if len(table.subjects) == 0:
            return
        if pl_module.task == "classification":
            plot_roc(self.run_dir / "roc_test.png", table)
        else:
            plot_scatter(self.run_dir / "scatter_test.png", table, mean, std)
