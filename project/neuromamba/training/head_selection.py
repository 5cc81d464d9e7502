"""``--clf_head_version auto``: which candidate head a run keeps, chosen on validation only.

Every candidate head is trained on the same frozen backbone features (one backbone pass per
batch serves them all). After each validation epoch the run records every candidate's
validation metrics; the *leading* head of an epoch is the best by the run's monitored metric
(the one that picks the best checkpoint). The checkpoint callback is given the leading head's
figure, so the best checkpoint is the best (head, epoch) pair over the run, and the head kept
is the leading head of that checkpoint's epoch. Test subjects are never looked at.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional


def metric_key(monitor: str) -> str:
    """'val/auroc' -> 'auroc'."""
    return monitor.split("/")[-1]


def leading_head(candidates: Dict[str, dict], monitor: str, mode: str) -> str:
    """The candidate with the best ``monitor`` value (a missing or NaN value is the worst; a tie
    goes to the earlier candidate, the simpler head)."""
    key, sign = metric_key(monitor), (1.0 if mode == "max" else -1.0)

    def score(item):
        value = item[1].get(key)
        return -math.inf if value is None or not math.isfinite(value) else sign * float(value)

    best = max(enumerate(candidates.items()), key=lambda pair: (score(pair[1]), -pair[0]))
    return best[1][0]


def epoch_record(epoch: int, candidates: Dict[str, dict], monitor: str, mode: str) -> dict:
    """One validation epoch: every candidate's metrics (plain floats) and the leading head."""
    plain = {name: {k: float(v) for k, v in metrics.items()} for name, metrics in candidates.items()}
    return {"epoch": int(epoch), "monitor": monitor, "mode": mode,
            "leading": leading_head(plain, monitor, mode), "candidates": plain}


def head_choice(history: List[dict]) -> Optional[dict]:
    """The choice a checkpoint stands for: the leading head of its last validation epoch (the
    checkpoint's own), with every candidate's validation figures there. None without any."""
    if not history:
        return None
    last = history[-1]
    return {"chosen": last["leading"], "epoch": last["epoch"], "monitor": last["monitor"],
            "candidates": last["candidates"]}


def describe(choice: dict) -> str:
    """One line: the head kept and every candidate's validation figure."""
    key = metric_key(choice["monitor"])
    shown = ", ".join(f"{name} {metrics.get(key, float('nan')):.4f}"
                      for name, metrics in choice["candidates"].items())
    return (f"--clf_head_version auto kept {choice['chosen']} (best {choice['monitor']} on validation, "
            f"epoch {choice['epoch']}; candidates: {shown})")
