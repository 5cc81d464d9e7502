"""The work behind ``project/baseline.py``: a run folder's data and split -> classical baselines
-> the run's subject-level metrics, predictions CSV, ROC/scatter PNG and summary.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import yaml

from ..fileio import atomic_write_text
from .baselines import (FEATURE_SETS, SCREENED, VOXEL_SETS, build_features, clip_series,
                        common_brain_parcels, common_brain_voxels, fit_model, token_grid_labels)


def run_settings(run_dir: str, scaling: str | None = None) -> argparse.Namespace:
    """The run's own flags (args.yaml), pointed at its own split file; with ``scaling``, its
    clips read under that input instead (the same raw frames: a static token is left out)."""
    path = Path(run_dir) / "args.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--run_dir {run_dir}: no args.yaml (not a run folder of project/main.py)")
    args = argparse.Namespace(**yaml.safe_load(path.read_text()))
    if getattr(args, "task", None) not in ("classification", "regression"):
        raise ValueError(f"--run_dir {run_dir}: a {getattr(args, 'task', '?')} run; baselines need "
                         f"a classification or regression run (its labels and split)")
    from neuromamba.checkpoints import recorded_file

    split = getattr(args, "split_file_used", None)
    split = recorded_file(split, run_dir) if split else next(  # the run folder may have moved
        iter(sorted((Path(run_dir) / "splits").glob("split_*.txt"))), None)
    if not split or not Path(split).is_file():
        raise FileNotFoundError(f"--run_dir {run_dir}: its split file is missing")
    args.split_file = str(split)
    # Read back through the one reading of a run's settings (older args.yaml files included).
    from neuromamba.spec import spec_from_config

    args.spec = spec_from_config(vars(args)).as_dict()
    args.img_size = args.spec["input"]["img_size"]  # raw frames (an older args.yaml: converted)
    if scaling:  # the same raw frames under another input
        args.spec["input"]["input_scaling_method"] = scaling
    return args


def parcel_labels(datamodule, args, atlas: str | None):
    """(labels on the model grid, number of parcels, what they are)."""
    shape = tuple(args.img_size[:3])
    if not atlas:
        labels = token_grid_labels(shape, args.patch_size[:3])
        return labels, int(labels.max()) + 1, f"token grid ({labels.max() + 1} patches)"
    from neuromamba.data.nifti import load_nifti, nilearn_resample

    grid = datamodule.grid
    if not grid.affine:
        raise ValueError("--atlas needs runs placed on the world grid (not --placement brain_centre)")
    image = nilearn_resample(load_nifti(atlas), np.asarray(grid.affine).reshape(4, 4), shape, "nearest")
    values = np.rint(np.asarray(image.dataobj)).astype(np.int64).reshape(shape)
    ids = np.unique(values[values > 0])
    if len(ids) < 2:
        raise ValueError(f"--atlas {atlas}: fewer than 2 labelled regions on the model grid")
    lookup = {v: i for i, v in enumerate(ids)}
    labels = np.vectorize(lambda v: lookup.get(v, -1))(values)
    return labels, len(ids), f"atlas {Path(atlas).name} ({len(ids)} regions)"


def evaluate(model, X, subjects, runs, starts, targets, task, mean, std, eval_level):
    """Clip predictions -> the model's subject-level table and metrics."""
    import torch

    from neuromamba.training.metrics import (ClipRecords, aggregate_by_subject,
                                             classification_metrics, regression_metrics)

    records = ClipRecords()
    if task == "classification":
        outputs = model.predict_proba(X)
        target = targets
    else:
        outputs = model.predict(X).reshape(-1, 1)
        target = (targets - mean) / std
    records.add(subjects, runs, torch.as_tensor(starts), torch.as_tensor(outputs, dtype=torch.float32),
                torch.as_tensor(target, dtype=torch.float32))
    table = aggregate_by_subject(records, eval_level)
    if task == "classification":
        metrics = classification_metrics(table.outputs, table.targets)
    else:
        metrics = regression_metrics(table.outputs[:, 0], table.targets, mean, std)
    return table, metrics


def run(args) -> Dict:
    from neuromamba.training.outputs import (class_names, plot_roc, plot_scatter, target_name,
                                             target_unit, write_predictions_csv)
    from neuromamba.data.datamodule import DataOptions, FMRIDataModule

    settings = run_settings(args.run_dir, getattr(args, "input_scaling_method", None))
    # The run's split read back, nothing written into its folder; clips read one by one and
    # scaled as the model gets them.
    options = DataOptions.from_values(vars(settings), output_dir=None, deliver="model",
                                      downstream_task_type=settings.downstream_task_type or "classification")
    datamodule = FMRIDataModule.from_spec(settings.spec["input"], settings.spec["model"]["patch_size"][3], options)
    datamodule.setup("fit")
    labels, num_parcels, parcel_text = parcel_labels(datamodule, settings, args.atlas)
    from neuromamba.spec import spec_from_config

    static = spec_from_config(vars(settings)).static_frames  # a static token is no time point
    voxels = (common_brain_voxels(datamodule.datasets["train"].datasets)
              if set(args.features) & set(VOXEL_SETS) else None)
    data = {split: clip_series(datamodule.datasets[split], labels, num_parcels, voxels, static)
            for split in ("train", "val", "test")}
    task = settings.task
    train_targets = data["train"][5]
    mean, std = (0.0, 1.0) if task == "classification" else (
        float(train_targets.mean()), float(train_targets.std() or 1.0))
    out = Path(args.output_dir or Path(args.run_dir) / "baselines")
    scaling = settings.spec["input"]["input_scaling_method"]
    result: Dict = {"run_dir": str(args.run_dir), "parcels": parcel_text, "task": task,
                    "split_file": settings.split_file, "input_scaling_method": scaling,
                    "feature_sets": {}}
    lines = [f"baselines on {args.run_dir} ({task}, parcels: {parcel_text}; input {scaling}; split "
             f"{settings.split_file})", "feature set    split  " + "  ".join(_metric_names(task))]
    names = class_names(Path(args.run_dir))
    for feature_set in args.features:
        parcels = None
        if feature_set in ("fc", "fc_screened"):
            parcels = common_brain_parcels(data["train"][1], args.fc_max_parcels)
        X = {s: build_features(data[s][0], feature_set, parcels, data[s][6]) for s in data}
        y = data["train"][5] if task == "classification" else (data["train"][5] - mean) / std
        model, best = fit_model(X["train"], y, data["train"][2], task, settings.seed,
                                screen=feature_set in SCREENED)
        entry = {"n_features": int(X["train"].shape[1]), "chosen": {k: float(v) for k, v in best.items()}}
        folder = out / feature_set
        for split in ("val", "test"):
            _, _, subjects, runs, starts, targets, _ = data[split]
            if not subjects:
                continue
            table, metrics = evaluate(model, X[split], subjects, runs, starts, targets, task, mean, std,
                                      getattr(settings, "eval_level", "subject"))
            entry[split] = {k: _finite(v) for k, v in metrics.items()}
            write_predictions_csv(folder / f"predictions_{split}.csv", table, task, mean, std)
            if split == "test" and len(table.subjects):
                if task == "classification":
                    plot_roc(folder / "roc_test.png", table, names,
                             title=f"{feature_set} baseline: subject-level ROC (n={len(table.subjects)})")
                else:
                    name = target_name(vars(settings))
                    plot_scatter(folder / "scatter_test.png", table, mean, std, name, target_unit(name))
            lines.append(f"{feature_set:14s} {split:5s}  " + "  ".join(
                f"{metrics.get(m, float('nan')):.4f}" for m in _metric_names(task)))
        result["feature_sets"][feature_set] = entry
    best = best_on_validation(result["feature_sets"], task)
    if best:
        result["best_on_validation"] = best
        test = result["feature_sets"][best].get("test") or {}
        headline = _metric_names(task)[0]
        lines.append(f"best on validation: {best} (test {headline} "
                     f"{test.get(headline) if test.get(headline) is not None else float('nan'):.4f})")
    atomic_write_text(out / "summary.json", json.dumps(result, indent=2) + "\n")
    lines.append(f"wrote {out}")
    result["text"] = "\n".join(lines)
    return result


def best_on_validation(feature_sets: Dict, task: str):
    """The feature set a user picks without seeing the test subjects: the best validation
    AUROC (classification) or the lowest validation MAE (regression); None without any."""
    key, sign = ("auroc", 1.0) if task == "classification" else ("mae_orig", -1.0)
    scored = [(sign * entry["val"][key], name) for name, entry in feature_sets.items()
              if (entry.get("val") or {}).get(key) is not None]
    return max(scored)[1] if scored else None


def _metric_names(task: str) -> List[str]:
    return ["auroc", "acc", "balanced_acc"] if task == "classification" else ["mae_orig", "pearson_r", "mse"]


def _finite(value):
    value = float(value)
    return value if np.isfinite(value) else None
