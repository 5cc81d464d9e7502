"""The work behind ``project/baseline.py``: a run folder's data and split -> classical baselines
-> the run's subject-level metrics, predictions CSV, ROC/scatter PNG and summary.json."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np
import yaml

from ..fileio import atomic_write_text
from ..spec import RunSpec, spec_from_config
from .baselines import (SCREENED, VOXEL_SETS, build_features, clip_series,
                        common_brain_parcels, common_brain_voxels, fit_model, token_grid_labels)


@dataclass(frozen=True)
class RunFolder:
    """A fine-tuning run folder read back for the baselines: its record (args.yaml), its spec
    (with the input scaling the baselines read its clips under) and its split file."""

    record: Mapping
    spec: RunSpec
    split_file: str

    @property
    def task(self) -> str:
        return self.record["task"]


def read_run_folder(run_dir: str, scaling: str | None = None) -> RunFolder:
    """The run's own settings (args.yaml, older files included), pointed at its own split file;
    with ``scaling``, its clips read under that input instead: the same raw frames, and a
    static token only if that input has one."""
    path = Path(run_dir) / "args.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--run_dir {run_dir}: no args.yaml (not a run folder of project/main.py)")
    record = yaml.safe_load(path.read_text()) or {}
    if record.get("task") not in ("classification", "regression"):
        raise ValueError(f"--run_dir {run_dir}: a {record.get('task', '?')} run; baselines need "
                         f"a classification or regression run (its labels and split)")
    from neuromamba.checkpoints import recorded_file

    split = record.get("split_file_used")
    split = recorded_file(split, run_dir) if split else next(  # the run folder may have moved
        iter(sorted((Path(run_dir) / "splits").glob("split_*.txt"))), None)
    if not split or not Path(split).is_file():
        raise FileNotFoundError(f"--run_dir {run_dir}: its split file is missing")
    spec = spec_from_config(record)
    if scaling:  # another input over the same raw frames: what follows from it follows the spec
        spec = dataclasses.replace(spec, input=dataclasses.replace(spec.input, input_scaling_method=scaling))
    return RunFolder(record, spec, str(split))


def parcel_labels(datamodule, spec: RunSpec, atlas: str | None):
    """(labels on the model grid, number of parcels, what they are)."""
    shape = tuple(spec.input.spatial_shape)
    if not atlas:
        labels = token_grid_labels(shape, spec.model.patch_size[:3])
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

    folder = read_run_folder(args.run_dir, getattr(args, "input_scaling_method", None))
    record, spec = folder.record, folder.spec
    # The run's split read back, nothing written into its folder; clips read one by one and
    # scaled as the model gets them.
    options = DataOptions.from_values(record, split_file=folder.split_file, output_dir=None, deliver="model",
                                      downstream_task_type=record.get("downstream_task_type") or "classification")
    datamodule = FMRIDataModule.from_spec(spec.input, spec.model.patch_size[3], options)
    datamodule.setup("fit")
    labels, num_parcels, parcel_text = parcel_labels(datamodule, spec, args.atlas)
    static = spec.static_frames  # of the input read here: a static token is no time point
    voxels = (common_brain_voxels(datamodule.datasets["train"].datasets)
              if set(args.features) & set(VOXEL_SETS) else None)
    data = {split: clip_series(datamodule.datasets[split], labels, num_parcels, voxels, static)
            for split in ("train", "val", "test")}
    task = folder.task
    train_targets = data["train"][5]
    mean, std = (0.0, 1.0) if task == "classification" else (
        float(train_targets.mean()), float(train_targets.std() or 1.0))
    out = Path(args.output_dir or Path(args.run_dir) / "baselines")
    scaling = spec.input.input_scaling_method
    result: Dict = {"run_dir": str(args.run_dir), "parcels": parcel_text, "task": task,
                    "split_file": folder.split_file, "input_scaling_method": scaling,
                    "feature_sets": {}}
    lines = [f"baselines on {args.run_dir} ({task}, parcels: {parcel_text}; input {scaling}; split "
             f"{folder.split_file})", "feature set    split  " + "  ".join(_metric_names(task))]
    names = class_names(Path(args.run_dir))
    for feature_set in args.features:
        parcels = None
        if feature_set in ("fc", "fc_screened"):
            parcels = common_brain_parcels(data["train"][1], args.fc_max_parcels)
        X = {s: build_features(data[s][0], feature_set, parcels, data[s][6]) for s in data}
        y = data["train"][5] if task == "classification" else (data["train"][5] - mean) / std
        model, best = fit_model(X["train"], y, data["train"][2], task, record["seed"],
                                screen=feature_set in SCREENED)
        entry = {"n_features": int(X["train"].shape[1]), "chosen": {k: float(v) for k, v in best.items()}}
        folder = out / feature_set
        for split in ("val", "test"):
            _, _, subjects, runs, starts, targets, _ = data[split]
            if not subjects:
                continue
            table, metrics = evaluate(model, X[split], subjects, runs, starts, targets, task, mean, std,
                                      record.get("eval_level", "subject"))
            entry[split] = {k: _finite(v) for k, v in metrics.items()}
            write_predictions_csv(folder / f"predictions_{split}.csv", table, task, mean, std)
            if split == "test" and len(table.subjects):
                if task == "classification":
                    plot_roc(folder / "roc_test.png", table, names,
                             title=f"{feature_set} baseline: subject-level ROC (n={len(table.subjects)})")
                else:
                    name = target_name(record)
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
