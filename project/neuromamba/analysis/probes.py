"""Linear probes on frozen embeddings (NeuroFM-style encoder evaluation).

Each target gets a standardised linear model evaluated by K-fold cross-validation **grouped by
subject** (no subject in both a training and a test fold): logistic regression for
classification, ridge regression with an inner choice of the penalty for regression. Scores are
computed on the pooled out-of-fold predictions:

* classification: accuracy, balanced accuracy, AUROC (binary; one-vs-rest macro for more
  classes), and the majority-class accuracy as the chance level;
* regression: R², Pearson r, MAE (in the target's units), with R² = 0 as the chance level.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data.labels import infer_task  # noqa: F401  (the one rule, shared with main.py)

TASK_KINDS = ("classification", "regression")


def _folds(groups: np.ndarray, n_splits: int, seed: int):
    from sklearn.model_selection import GroupKFold

    unique = np.unique(groups)
    k = min(n_splits, len(unique))
    if k < 2:
        raise ValueError(f"a grouped cross-validation needs at least 2 subjects, got {len(unique)}")
    # Shuffle the group order (GroupKFold itself is deterministic by group size).
    rng = np.random.default_rng(seed)
    relabel = {g: i for i, g in enumerate(rng.permutation(unique))}
    coded = np.array([relabel[g] for g in groups])
    return list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=coded))


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))


def _regressor():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))


def probe_classification(X, y, groups, n_splits=5, seed=0) -> Dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    classes, y_coded = np.unique(np.asarray(y).astype(str), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("classification probe needs at least 2 classes")
    proba = np.zeros((len(y_coded), len(classes)))
    for train, test in _folds(groups, n_splits, seed):
        present = np.unique(y_coded[train])
        model = _classifier(seed).fit(X[train], y_coded[train])
        proba[np.ix_(test, present)] = model.predict_proba(X[test])
    pred = proba.argmax(axis=1)
    if len(classes) == 2:
        auc = roc_auc_score(y_coded, proba[:, 1])
    else:
        auc = roc_auc_score(y_coded, proba, multi_class="ovr", average="macro")
    majority = np.bincount(y_coded).max() / len(y_coded)
    return {"accuracy": float(accuracy_score(y_coded, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_coded, pred)),
            "auroc": float(auc), "chance": float(majority)}


def probe_regression(X, y, groups, n_splits=5, seed=0) -> Dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score

    y = np.asarray(y, dtype=float)
    pred = np.zeros_like(y)
    for train, test in _folds(groups, n_splits, seed):
        pred[test] = _regressor().fit(X[train], y[train]).predict(X[test])
    r = float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 and np.std(y) > 0 else 0.0
    return {"r2": float(r2_score(y, pred)), "pearson_r": r,
            "mae": float(mean_absolute_error(y, pred)), "chance": 0.0}


PROBES = {"classification": probe_classification, "regression": probe_regression}


def run_probe(X, y, groups, task: Optional[str] = None, n_splits: int = 5, seed: int = 0) -> Dict:
    """Cross-validated probe of one target; rows with a missing value are left out."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=object)
    groups = np.asarray([str(g) for g in groups])
    if not (len(X) == len(y) == len(groups)):
        raise ValueError(f"probe inputs differ in length: {len(X)} embeddings, {len(y)} targets, "
                         f"{len(groups)} subject ids")
    keep = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) and v != ""
                     for v in y])
    X, y, groups = X[keep], y[keep], groups[keep]
    task = task or infer_task(y)
    if task not in PROBES:
        raise ValueError(f"unknown probe task {task!r}; choose one of {TASK_KINDS}")
    scores = PROBES[task](X, y, groups, n_splits, seed)
    return {"task": task, "n": int(len(y)), "subjects": int(len(np.unique(groups))), **scores}


def probe_table(X, targets: Dict[str, Sequence], groups, tasks: Optional[Dict[str, str]] = None,
                n_splits: int = 5, seed: int = 0) -> List[Dict]:
    """One row of probe scores per target name."""
    rows = []
    for name, values in targets.items():
        result = run_probe(X, values, groups, (tasks or {}).get(name), n_splits, seed)
        rows.append({"target": name, **result})
    return rows


PROBE_COLUMNS = ["target", "task", "n", "subjects", "accuracy", "balanced_accuracy", "auroc",
                 "r2", "pearson_r", "mae", "chance"]
