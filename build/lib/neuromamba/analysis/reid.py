"""Subject re-identification (fMRI retrieval) from embeddings.

Protocol: every item (typically one embedding per run or session of a subject) is a query in
turn; its gallery is every other item except those of the same subject AND the same group
(run/session), so a query must find its subject's *other* runs, not another clip of its own
run. Items are ranked by cosine similarity (ties broken by gallery order). Metrics:

* top-k: fraction of queries with at least one same-subject item among the k most similar;
* mAP: mean over queries of average precision, ``AP = (1/R) Σ_{r: rank r is a match} P@r``
  with ``R`` the query's number of matches in its gallery;
* chance top-1: mean over queries of ``R / gallery size`` (a random ranking's top-1).

Queries whose gallery holds no item of their subject are skipped and counted.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def cosine_similarity_matrix(a: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
    """``(n, d)`` x ``(m, d)`` -> ``(n, m)`` cosine similarities (zero vectors give 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be 2D with equal widths, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na == 0, 1, na)) @ (b / np.where(nb == 0, 1, nb)).T


def average_precision(matches_in_rank_order: np.ndarray) -> float:
    """AP of one ranked list of booleans (True = same subject)."""
    hits = np.asarray(matches_in_rank_order, dtype=bool)
    if not hits.any():
        return 0.0
    ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the matches
    precision_at_hits = np.arange(1, len(ranks) + 1) / ranks
    return float(precision_at_hits.mean())


def reidentification_metrics(
    embeddings: np.ndarray,
    subjects: Sequence[str],
    groups: Optional[Sequence[str]] = None,
    topk: Sequence[int] = (1, 5),
) -> Dict[str, float]:
    """Re-identification scores for items ``embeddings (n, d)`` of ``subjects`` (and optional
    ``groups``: run/session ids, see the module docstring)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    subjects = np.asarray([str(s) for s in subjects])
    if emb.ndim != 2 or len(subjects) != emb.shape[0]:
        raise ValueError(f"need one subject id per embedding row: {emb.shape} vs {len(subjects)} ids")
    groups = np.asarray([""] * len(subjects) if groups is None else [str(g) for g in groups])
    if len(groups) != len(subjects):
        raise ValueError(f"need one group (run/session) id per embedding row, got {len(groups)}")
    sim = cosine_similarity_matrix(emb)
    same_subject = subjects[:, None] == subjects[None, :]
    excluded = same_subject & (groups[:, None] == groups[None, :])  # self and its own run
    hits = {k: 0 for k in topk}
    aps, chance = [], []
    skipped = 0
    for q in range(len(subjects)):
        gallery = np.flatnonzero(~excluded[q])
        matches = same_subject[q, gallery]
        if not matches.any():
            skipped += 1
            continue
        order = np.argsort(-sim[q, gallery], kind="stable")
        ranked = matches[order]
        for k in topk:
            hits[k] += bool(ranked[:k].any())
        aps.append(average_precision(ranked))
        chance.append(matches.sum() / len(gallery))
    n = len(aps)
    if n == 0:
        raise ValueError("no query has another item of its subject in the gallery; "
                         "re-identification needs at least two runs/sessions per subject")
    out = {f"top{k}": hits[k] / n for k in topk}
    out.update({"mAP": float(np.mean(aps)), "chance_top1": float(np.mean(chance)),
                "num_queries": n, "skipped_queries": skipped})
    return out


def mean_by_key(embeddings: np.ndarray, keys: Sequence) -> tuple:
    """Average rows sharing a key (e.g. (subject, run)) -> (unique keys in first-seen order,
    ``(k, d)`` means)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    order, index = [], {}
    for key in keys:
        if key not in index:
            index[key] = len(order)
            order.append(key)
    rows = np.array([index[k] for k in keys])
    sums = np.zeros((len(order), emb.shape[1]))
    np.add.at(sums, rows, emb)
    counts = np.bincount(rows, minlength=len(order))[:, None]
    return order, sums / counts
