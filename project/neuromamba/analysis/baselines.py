"""Classical baselines on a run's own split: what a reviewer asks for first.

Features of each clip, on the model's token grid (or an atlas): every parcel's time series is
the mean of its brain voxels per frame (the clip as the model sees it, scaled alike), and

* ``temporal_mean``: each parcel's temporal mean (the static image: anatomy, contrast);
* ``temporal_std``: each parcel's temporal standard deviation (fluctuation amplitude);
* ``patch_stats``: both of the above;
* ``fc``: the functional connectivity of the parcels, Fisher-z correlations of their time
  series (upper triangle), over the parcels that hold brain in every training clip;

and, at the voxel level with univariate screening (what a careful analyst uses, the convention
of nilearn's ``Decoder``: a parcel average dilutes a small region, screening keeps it):

* ``voxel_mean`` / ``voxel_std``: each brain voxel's temporal mean / standard deviation, over the
  voxels that are brain in every training run;
* ``fc_screened``: the parcel-pair correlations of ``fc``, screened.

Screening keeps the features with the strongest univariate association with the target (ANOVA
F for classification, F of the correlation for regression), the kept percentile chosen together
with the penalty, both inside the cross-validation on training subjects only. Models from
scikit-learn, their regularisation chosen by cross-validation on the train split grouped by
subject: logistic regression (classification), ridge (regression). Clips are predicted one by
one and averaged per subject, exactly like the model's evaluation, so the metrics are the same
subject-level ones on the same subjects and clips.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

FEATURE_SETS = ("temporal_mean", "temporal_std", "patch_stats", "fc", "voxel_mean", "voxel_std",
                "fc_screened")
VOXEL_SETS = ("voxel_mean", "voxel_std")
SCREENED = VOXEL_SETS + ("fc_screened",)
SCREEN_PERCENTILES = (1, 5, 10, 25)


def parcel_time_series(clip: np.ndarray, labels: np.ndarray, brain: np.ndarray,
                       num_parcels: int) -> np.ndarray:
    """``clip`` (D, H, W, T), ``labels`` (D, H, W) ints in [0, num_parcels) (-1: none),
    ``brain`` (D, H, W) bool -> (num_parcels, T): mean over each parcel's brain voxels per
    frame; 0 for a parcel without brain voxels."""
    keep = brain & (labels >= 0)
    index = labels[keep]
    values = clip[keep]  # (V, T)
    sums = np.zeros((num_parcels, clip.shape[-1]), np.float64)
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=num_parcels).astype(np.float64)
    return sums / np.maximum(counts, 1.0)[:, None]


def token_grid_labels(shape: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """Each voxel's spatial patch index on the model's token grid (row-major, as tokens)."""
    grid = [s // p for s, p in zip(shape, patch)]
    axes = np.meshgrid(*[np.arange(s) // p for s, p in zip(shape, patch)], indexing="ij")
    return (axes[0] * grid[1] + axes[1]) * grid[2] + axes[2]


def patch_stats_features(series: np.ndarray) -> np.ndarray:
    """[temporal mean of every parcel, temporal std of every parcel]."""
    return np.concatenate([series.mean(axis=1), series.std(axis=1)])


def fc_features(series: np.ndarray, parcels: np.ndarray) -> np.ndarray:
    """Fisher-z correlations between the given parcels' time series (upper triangle)."""
    ts = series[parcels]
    ts = ts - ts.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(ts, axis=1, keepdims=True)
    ts = ts / np.where(norm > 0, norm, 1.0)
    corr = np.clip(ts @ ts.T, -0.999999, 0.999999)
    upper = np.triu_indices(len(parcels), k=1)
    return np.arctanh(corr[upper])


@dataclass
class ClipFeatures:
    features: Dict[str, np.ndarray]  # feature set -> (n_clips, n_features)
    subjects: list
    runs: list
    starts: list
    targets: np.ndarray


def clip_series(dataset, labels: np.ndarray, num_parcels: int, voxels: Optional[np.ndarray] = None,
                static_frames: int = 0):
    """Every clip's parcel time series, plus who it belongs to and its target; with ``voxels``
    (flat indices into the grid) also each of those voxels' temporal mean and std per clip,
    (n_clips, 2, len(voxels)). ``static_frames`` leading frames (a static-image token) are
    not part of any time series."""
    series, brains, subjects, runs, starts, targets, voxel_stats = [], [], [], [], [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        clip = item["fmri"][0].numpy()[..., static_frames:]
        brain = item["brain_mask"].numpy().astype(bool)
        series.append(parcel_time_series(clip, labels, brain, num_parcels))
        brains.append(np.bincount(labels[brain & (labels >= 0)], minlength=num_parcels) > 0)
        if voxels is not None:
            values = clip.reshape(-1, clip.shape[-1])[voxels]
            voxel_stats.append(np.stack([values.mean(axis=1), values.std(axis=1)]).astype(np.float32))
        subjects.append(str(item["subject"]))
        runs.append(str(item["run"]))
        starts.append(int(item["start"]))
        targets.append(float(item["target"]))
    stats = np.stack(voxel_stats) if voxel_stats else None
    return series, brains, subjects, runs, starts, np.asarray(targets), stats


def common_brain_voxels(datasets) -> np.ndarray:
    """Flat indices of the voxels that are brain in every run of ``datasets`` (the training
    split's ClipDatasets), read from the runs' stored masks."""
    common = None
    for part in datasets:
        for entry in part.entries:
            brain = np.asarray(part.reader.brain_mask(entry), bool)
            common = brain if common is None else common & brain
    if common is None or not common.any():
        raise ValueError("no voxel is brain in every training run: no voxel-level baseline")
    return np.flatnonzero(common.reshape(-1))


def common_brain_parcels(brains: Sequence[np.ndarray], max_parcels: int) -> np.ndarray:
    """Parcels holding brain in every clip given (the train clips), refusing too many for FC."""
    parcels = np.flatnonzero(np.logical_and.reduce(list(brains)))
    if len(parcels) < 2:
        raise ValueError("fewer than 2 parcels hold brain in every training clip: no connectivity")
    if len(parcels) > max_parcels:
        raise ValueError(f"{len(parcels)} brain parcels on the token grid make "
                         f"{len(parcels) * (len(parcels) - 1) // 2:,} connectivity features; pass "
                         f"--atlas (e.g. a 100-400 region parcellation) or raise --fc_max_parcels")
    return parcels


def build_features(series, feature_set: str, parcels: Optional[np.ndarray] = None,
                   voxel_stats: Optional[np.ndarray] = None) -> np.ndarray:
    if feature_set in VOXEL_SETS:
        return voxel_stats[:, VOXEL_SETS.index(feature_set)].astype(np.float64)
    if feature_set == "fc_screened":
        feature_set = "fc"
    if feature_set == "patch_stats":
        return np.stack([patch_stats_features(s) for s in series])
    if feature_set == "temporal_mean":
        return np.stack([s.mean(axis=1) for s in series])
    if feature_set == "temporal_std":
        return np.stack([s.std(axis=1) for s in series])
    if feature_set == "fc":
        return np.stack([fc_features(s, parcels) for s in series])
    raise ValueError(f"unknown feature set {feature_set!r}; choose from {FEATURE_SETS}")


def fit_model(X: np.ndarray, y: np.ndarray, groups: Sequence[str], task: str, seed: int = 0,
              screen: bool = False):
    """Standardised features -> logistic regression / ridge, the penalty (and with ``screen``
    the percentile of features kept by univariate screening) chosen by grouped
    cross-validation on the training clips (no subject in two folds)."""
    from sklearn.feature_selection import SelectPercentile, f_classif, f_regression
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    folds = min(5, len(set(groups)))
    if task == "classification":  # each fold needs a subject of every class
        per_class = [len({g for g, c in zip(groups, y) if c == k}) for k in np.unique(y)]
        folds = min(folds, min(per_class))
    if folds < 2:
        raise ValueError("the train split needs at least 2 subjects to choose the penalty")
    if task == "classification":
        model = LogisticRegression(max_iter=5000)
        grid = {"model__C": np.logspace(-4, 2, 7)}
        scoring = "neg_log_loss"
    else:
        model = Ridge()
        grid = {"model__alpha": np.logspace(-2, 5, 8)}
        scoring = "neg_mean_squared_error"
    # Classification folds keep every class in each validation fold (else log-loss is undefined).
    cv = StratifiedGroupKFold(n_splits=folds) if task == "classification" else GroupKFold(n_splits=folds)
    steps = [("scale", StandardScaler()), ("model", model)]
    if screen:  # fitted inside each fold: the held-out subjects never choose the features
        score = f_classif if task == "classification" else f_regression
        steps.insert(0, ("screen", SelectPercentile(score)))
        grid = {**grid, "screen__percentile": list(SCREEN_PERCENTILES)}
    search = GridSearchCV(Pipeline(steps), grid, cv=cv, scoring=scoring, n_jobs=1)
    with warnings.catch_warnings():  # a feature constant within a fold has no F score: ranked last
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Features .* are constant", category=UserWarning)
        search.fit(X, y, groups=np.asarray(groups))
    return search.best_estimator_, search.best_params_
