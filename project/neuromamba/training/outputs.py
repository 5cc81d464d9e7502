"""The run folder: args.yaml, per-subject test predictions, ROC curve / scatter plot.

Layout of ``<output_dir>/<run_name>/``::

    args.yaml             every flag after validation
    splits/split_<dataset>_seed<seed>.txt   subject split (written by the data module)
    label_classes.json    class names in index order (classification; the data module)
    checkpoints/          best-*.ckpt and last.ckpt
    metrics.csv           the CSV logger's epoch/step metrics (always written)
    predictions_test.csv  one row per test subject
    roc_test.png | scatter_test.png
    summary.json          final and best metrics, checkpoints, split sizes, time, versions
    training_curves.png   train/val loss and the monitored metric per epoch
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import yaml

from neuromamba.fileio import atomic_write_bytes
from neuromamba.training.metrics import SubjectTable


def default_run_name(run) -> str:
    """Same name on every rank: the scheduler's job id when there is one, else a timestamp that
    local DDP children inherit through the environment (``run``: a run_config.RunConfig)."""
    task = run.task
    kind = "pretrain" if task.pretraining else f"{task.downstream_task}_{task.downstream_task_type}"
    size = f"E{run.spec.model.embed_dim}_D{run.spec.model.depth}"
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID", "").split(".")[0]
    if not job:
        job = os.environ.setdefault("NEUROMAMBA_RUN_STAMP", time.strftime("%Y%m%d-%H%M%S"))
    cohorts = task.dataset_name
    dataset = "+".join(cohorts) if isinstance(cohorts, list) else cohorts
    return f"{dataset}_{kind}_{size}_seed{task.seed}_{job}"


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
    --eval_level run|clip), with the clip-averaged prediction. Values are rounded to what the
    numbers can mean (6 significant digits), not float noise like 57.9999999440018."""
    if task == "classification":
        k = table.outputs.shape[1]
        header = ["subject", "num_clips", "target", "predicted"] + [f"prob_class{i}" for i in range(k)]
        rows = [[s, int(n), int(t), int(np.argmax(p))] + [_sig(v) for v in p]
                for s, n, t, p in zip(table.subjects, table.num_clips, table.targets, table.outputs)]
    else:
        header = ["subject", "num_clips", "target", "prediction", "target_standardised",
                  "prediction_standardised"]
        rows = [[s, int(n), _sig(t * target_std + target_mean), _sig(p[0] * target_std + target_mean),
                 _sig(t), _sig(p[0])]
                for s, n, t, p in zip(table.subjects, table.num_clips, table.targets, table.outputs)]
    return header, rows


def _sig(value, digits: int = 6) -> float:
    return float(f"{float(value):.{digits}g}")


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


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_roc(path: Path, table: SubjectTable, class_names=None, title: str = "") -> Path:
    fig = roc_figure(table, class_names, title)
    _save_figure(fig, path)
    _pyplot().close(fig)
    return Path(path)


def roc_figure(table: SubjectTable, class_names=None, title: str = ""):
    """Subject-level ROC naming the positive class, with ACC and balanced ACC beside AUC. A
    curve is drawn exactly where the metric is defined (training.metrics: a positive and a
    negative subject), with the metric's own value; a class without one says why it has no
    curve, as the metric is NaN there."""
    from sklearn.metrics import roc_curve

    from .metrics import classification_metrics

    plt = _pyplot()
    y = table.targets.astype(int)
    k = table.outputs.shape[1]
    names = list(class_names) if class_names and len(class_names) == k else [str(i) for i in range(k)]
    metrics = classification_metrics(table.outputs, y) if len(y) else {}
    classes = [1] if k == 2 else list(range(k))
    fig, ax = plt.subplots(figsize=(5, 5))
    notes = []
    for c in classes:
        positives = y == c
        # the metric's own value and rule (NaN where a class has no positive or no negative)
        auc = metrics.get("auroc" if k == 2 else f"auroc_class{c}", float("nan"))
        if np.isnan(auc):
            notes.append(f"no curve for {names[c]!r}: {int(positives.sum())} positive and "
                         f"{int((~positives).sum())} negative subjects; AUROC is undefined (nan)")
            continue
        fpr, tpr, _ = roc_curve(positives, table.outputs[:, c])
        few = min(int(positives.sum()), int((~positives).sum()))
        caution = f" ({int(positives.sum())} pos., {int((~positives).sum())} neg.)" if few < 5 else ""
        label = (f"AUC {auc:.3f}" if k == 2 else f"{names[c]} vs rest: AUC {auc:.3f}") + caution
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    positive = f"positive class: {names[1]}" if k == 2 else "one curve per class"
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=title or f"subject-level ROC (n={len(y)}; {positive})")
    summary = (f"ACC {metrics.get('acc', float('nan')):.3f}   balanced ACC "
               f"{metrics.get('balanced_acc', float('nan')):.3f}")
    ax.text(0.98, 0.30, "\n".join([summary] + notes), transform=ax.transAxes, ha="right",
            va="bottom", fontsize=8, wrap=True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_scatter(path: Path, table: SubjectTable, target_mean: float, target_std: float,
                 target_name: str = "target", unit: str = "", title: str = "") -> Path:
    fig = scatter_figure(table, target_mean, target_std, target_name, unit, title)
    _save_figure(fig, path)
    _pyplot().close(fig)
    return Path(path)


def scatter_figure(table: SubjectTable, target_mean: float, target_std: float,
                   target_name: str = "target", unit: str = "", title: str = ""):
    """Subject-level predicted vs true values in the target's units, with MAE and Pearson r."""
    plt = _pyplot()
    t = table.targets * target_std + target_mean
    p = table.outputs[:, 0] * target_std + target_mean
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(t, p, s=12)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    r = np.corrcoef(t, p)[0, 1] if len(t) > 1 and t.std() > 0 and p.std() > 0 else float("nan")
    mae = float(np.mean(np.abs(t - p))) if len(t) else float("nan")
    label = f"{target_name} ({unit})" if unit else target_name
    ax.set(xlabel=f"true {label}", ylabel=f"predicted {label}",
           title=title or f"subject-level {target_name} (n={len(t)})")
    ax.text(0.02, 0.98, f"MAE {mae:.3g}{' ' + unit if unit else ''}\nPearson r {r:.3f}",
            transform=ax.transAxes, ha="left", va="top", fontsize=9)
    return fig


def plot_training_curves(path: Path, metrics_csv: Path, monitor: str = "") -> Optional[Path]:
    """Train and validation loss per epoch, and the monitored metric if it is another one."""
    if not Path(metrics_csv).is_file():
        return None
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))

    def per_epoch(key):
        points = {}
        for row in rows:
            if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                points[int(float(row["epoch"]))] = float(row[key])
        return sorted(points.items())

    curves = {"train loss": per_epoch("train/loss_epoch"), "val loss": per_epoch("val/loss")}
    extra = monitor if monitor and monitor != "val/loss" else ""
    if not any(curves.values()):
        return None
    plt = _pyplot()
    panels = 2 if extra else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    for name, points in curves.items():
        if points:
            axes[0, 0].plot(*zip(*points), marker="o", label=name)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    axes[0, 0].legend(fontsize=8)
    if extra:
        points = per_epoch(extra)
        if points:
            axes[0, 1].plot(*zip(*points), marker="o", color="C2")
        axes[0, 1].set(xlabel="epoch", ylabel=extra, title=f"{extra} (monitored)")
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
            plot_roc(self.run_dir / "roc_test.png", table, class_names(self.run_dir))
        else:
            name = target_name(pl_module.config)
            plot_scatter(self.run_dir / "scatter_test.png", table, mean, std, name, target_unit(name))


def class_names(run_dir: Path) -> Optional[list]:
    """Class names in index order from the run folder's label_classes.json, if any."""
    path = Path(run_dir) / "label_classes.json"
    if not path.is_file():
        return None
    mapping = json.loads(path.read_text())
    return [name for name, _ in sorted(mapping["classes"].items(), key=lambda kv: kv[1])]


def target_name(config: dict) -> str:
    return str(config.get("target_column") or config.get("downstream_task") or "target")


def target_unit(name: str) -> str:
    from neuromamba.data.labels import TARGET_UNITS

    return TARGET_UNITS.get(name, "")
