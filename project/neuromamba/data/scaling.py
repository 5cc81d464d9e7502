"""Load-time input scaling (SPEC §10): raw frames + per-run brain statistics -> model input.

Runs are stored unscaled; the scaling is chosen at load time (``--input_scaling_method``) so it
can change without reprocessing. With mu, sigma, m, M the brain (non-zero voxel) mean, std, min,
max of the run:

- ``znorm_minback``  : (x - mu) / sigma; background (raw 0) becomes -mu/sigma, the volume minimum
- ``znorm_zeroback`` : the same, then background set to 0
- ``minmax_minback`` : (x - m) / (M - m); background becomes -m/(M - m), the volume minimum
- ``minmax_zeroback``: the same, then background set to 0
- ``znorm_demean``   : (x - mu) / sigma, then each brain voxel's mean over the clip subtracted;
  background 0. The static image is a subject fingerprint (texture, coil, anatomy) that a model
  memorises instead of learning the fluctuations (benchmarks/learnability.py: with it, train
  loss reaches its floor and held-out AUC stays at chance); the fluctuations keep their
  run-relative amplitude. This project's ``--recipe tuned``; not the default.

The paper's input, ``znorm_minback``, is the default (``neuromamba.spec.PAPER_DEFAULTS``).

"Background" is a raw value of exactly 0 (skull-stripped data, zero padding); for
``znorm_demean`` a voxel that is 0 in every frame of the clip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

# Guards against a constant run (std 0 / max == min); such runs are rejected by preprocessing,
# this only keeps a hand-made file from producing inf.
_EPS = 1e-8


@dataclass(frozen=True)
class ScalingMethod:
    name: str
    affine: Callable[[Mapping[str, float]], tuple]  # stats -> (offset, scale): y = (x - offset) * scale
    background: str  # "min" (background is the volume minimum) or "zero"
    demean_over_time: bool = False  # subtract each brain voxel's mean over the clip


def _znorm(stats: Mapping[str, float]) -> tuple:
    return float(stats["mean"]), 1.0 / max(float(stats["std"]), _EPS)


def _minmax(stats: Mapping[str, float]) -> tuple:
    lo, hi = float(stats["min"]), float(stats["max"])
    return lo, 1.0 / max(hi - lo, _EPS)


SCALING_METHODS = {
    "znorm_minback": ScalingMethod("znorm_minback", _znorm, "min"),
    "znorm_zeroback": ScalingMethod("znorm_zeroback", _znorm, "zero"),
    "minmax_minback": ScalingMethod("minmax_minback", _minmax, "min"),
    "minmax_zeroback": ScalingMethod("minmax_zeroback", _minmax, "zero"),
    "znorm_demean": ScalingMethod("znorm_demean", _znorm, "zero", demean_over_time=True),
}


def get_scaling(name: str) -> ScalingMethod:
    try:
        return SCALING_METHODS[name]
    except KeyError:
        raise ValueError(
            f"--input_scaling_method {name!r} is unknown; choose one of {sorted(SCALING_METHODS)}"
        ) from None


def background_value_for(scaling_method: str) -> str:
    """'min' when the background is the volume minimum after scaling, 'zero' when it is 0.

    The backbone's background-token mask (SPEC §3) needs to know which one to look for.
    """
    return get_scaling(scaling_method).background


def scale_inplace(raw: np.ndarray, stats: Mapping[str, float], scaling_method: str) -> np.ndarray:
    """Scale a float32 array of raw values in place and return it. For a method that demeans
    over time, ``raw`` is one clip with time on the last axis, ``(D, H, W, T)``."""
    method = get_scaling(scaling_method)
    offset, scale = method.affine(stats)
    if method.demean_over_time:
        background = ~np.any(raw != 0, axis=-1)  # 0 in every frame
    elif method.background == "zero":
        background = raw == 0
    raw -= np.float32(offset)
    raw *= np.float32(scale)
    if method.demean_over_time:
        raw -= raw.mean(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    if method.background == "zero":
        raw[background] = 0.0
    return raw
