"""Subject-level evaluation: gather clip outputs from every rank, average per subject, score.

Clips are identified by (subject, run, start) so that the duplicates a DistributedSampler adds
to even out the ranks are counted once, and metrics on N processes equal those on one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import balanced_accuracy_score, roc_auc_score


@dataclass
class ClipRecords:
    """Per-clip outputs accumulated during one validation/test epoch on one rank."""

    subjects: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    outputs: list = field(default_factory=list)   # one np.ndarray (num_outputs,) per clip
    targets: list = field(default_factory=list)
    losses: list = field(default_factory=list)    # per-clip loss, for an exact epoch mean

    def add(self, subjects, runs, starts, outputs: torch.Tensor, targets: torch.Tensor,
            losses: torch.Tensor | None = None) -> None:
        self.subjects.extend(str(s) for s in subjects)
        self.runs.extend(str(r) for r in runs)
        self.starts.extend(int(s) for s in torch.as_tensor(starts).reshape(-1).tolist())
        self.outputs.extend(outputs.detach().float().cpu().numpy())
        self.targets.extend(targets.detach().float().cpu().reshape(-1).numpy().tolist())
        if losses is not None:
            self.losses.extend(losses.detach().float().cpu().reshape(-1).numpy().tolist())

    def __len__(self) -> int:
        return len(self.subjects)

    def as_payload(self) -> dict:
        return {"subjects": self.subjects, "runs": self.runs, "starts": self.starts,
                "outputs": [np.asarray(o, dtype=np.float32) for o in self.outputs],
                "targets": self.targets, "losses": self.losses}


def gather_records(records: ClipRecords) -> ClipRecords:
    """All clips of every rank, on every rank (small arrays: all_gather_object is enough)."""
    payload = records.as_payload()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, payload)
    else:
        gathered = [payload]
    merged = ClipRecords()
    for part in gathered:
        merged.subjects += part["subjects"]
        merged.runs += part["runs"]
        merged.starts += part["starts"]
        merged.outputs += list(part["outputs"])
        merged.targets += part["targets"]
        merged.losses += part["losses"]
    return merged


def mean_clip_loss(records: ClipRecords) -> float:
    """Mean per-clip loss over unique clips (a DDP pad duplicate is counted once)."""
    seen = {}
    for key, loss in zip(zip(records.subjects, records.runs, records.starts), records.losses):
        seen.setdefault(key, loss)
    return float(np.mean(list(seen.values()))) if seen else float("nan")


@dataclass
class SubjectTable:
    subjects: list[str]
    outputs: np.ndarray   # (S, num_outputs): mean clip probability / standardised prediction
    targets: np.ndarray   # (S,)
    num_clips: np.ndarray  # (S,)


# What one evaluation unit is: a subject (the paper's protocol), a run (task-state labels per
# run) or a single clip (labels per clip).
EVAL_LEVELS = {
    "subject": lambda subject, run, start: subject,
    "run": lambda subject, run, start: f"{subject}/{run}",
    "clip": lambda subject, run, start: f"{subject}/{run}/{start}",
}


def aggregate_by_subject(records: ClipRecords, level: str = "subject") -> SubjectTable:
    """Drop duplicate clips, then average the clip outputs of each unit (sorted by id); the
    unit is a subject by default, or a run / clip (``level``)."""
    if level not in EVAL_LEVELS:
        raise ValueError(f"unknown evaluation level {level!r}; choose one of {list(EVAL_LEVELS)}")
    unit_of = EVAL_LEVELS[level]
    unique = {}
    for i, key in enumerate(zip(records.subjects, records.runs, records.starts)):
        unique.setdefault(key, i)
    by_subject: dict[str, list[int]] = {}
    for key, i in unique.items():
        by_subject.setdefault(unit_of(*key), []).append(i)
    subjects = sorted(by_subject)
    outputs, targets, counts = [], [], []
    for subject in subjects:
        idx = by_subject[subject]
        clip_targets = {records.targets[i] for i in idx}
        if len(clip_targets) > 1:
            raise ValueError(f"{level} {subject!r} has clips with different targets {sorted(clip_targets)}; "
                             f"{level}-level evaluation needs one label per {level} (see --eval_level)")
        outputs.append(np.mean(np.stack([records.outputs[i] for i in idx]), axis=0))
        targets.append(records.targets[idx[0]])
        counts.append(len(idx))
    width = records.outputs[0].shape[-1] if records.outputs else 1
    return SubjectTable(subjects, np.asarray(outputs, dtype=np.float64).reshape(len(subjects), width),
                        np.asarray(targets, dtype=np.float64), np.asarray(counts))


def classification_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """ACC, balanced ACC, AUROC (binary; macro one-vs-rest for >2 classes) and per-class AUROC.

    AUROC values that are undefined (a class absent from the targets) are NaN.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets).astype(np.int64)
    num_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    with warnings.catch_warnings():  # a class predicted but absent from y is fine here
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y, pred)) if len(y) else float("nan")
    out = {"acc": float((pred == y).mean()) if len(y) else float("nan"), "balanced_acc": balanced}
    per_class = []
    for k in range(num_classes):
        positives = y == k
        if positives.all() or not positives.any():
            per_class.append(float("nan"))
        else:
            per_class.append(float(roc_auc_score(positives, probs[:, k])))
    if num_classes == 2:
        out["auroc"] = per_class[1]
    else:
        defined = [a for a in per_class if not np.isnan(a)]
        out["auroc"] = float(np.mean(defined)) if defined else float("nan")
        for k, a in enumerate(per_class):
            out[f"auroc_class{k}"] = a
    return out


def regression_metrics(pred_std: np.ndarray, target_std: np.ndarray, mean: float,
                       std: float) -> dict[str, float]:
    """MSE/MAE on standardised targets and in original units, and Pearson r."""
    p = np.asarray(pred_std, dtype=np.float64).reshape(-1)
    t = np.asarray(target_std, dtype=np.float64).reshape(-1)
    err = p - t
    out = {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
           "mse_orig": float(np.mean((err * std) ** 2)), "mae_orig": float(np.mean(np.abs(err * std)))}
    if len(p) > 1 and p.std() > 0 and t.std() > 0:
        out["pearson_r"] = float(np.corrcoef(p, t)[0, 1])
    else:
        out["pearson_r"] = float("nan")
    return out
