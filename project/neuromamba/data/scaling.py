"""Load-time input scaling (SPEC §10): raw frames + the run's statistics -> model input.

Runs are stored unscaled; the scaling is chosen at load time (``--input_scaling_method``) so it
can change without reprocessing. With mu, sigma, m, M the run's brain (non-zero voxel) mean,
std, min, max; m_v each brain voxel's mean over the whole run (the static image); s the run's
typical fluctuation (root mean over brain voxels of each voxel's temporal variance). What each
keeps: the static image (anatomy, contrast, brain size), the fluctuations' amplitude, or both.

- ``znorm_minback``  : (x - mu) / sigma; background (raw 0) becomes -mu/sigma, the volume
  minimum. Keeps the static image and the fluctuations (amplitude relative to sigma, which is
  mostly static contrast). The paper's input, and the default.
- ``znorm_zeroback`` : the same, then background set to 0. Keeps both, as above.
- ``minmax_minback`` : (x - m) / (M - m); background becomes -m/(M - m), the volume minimum.
  Keeps both (amplitude relative to the run's range).
- ``minmax_zeroback``: the same, then background set to 0. Keeps both, as above.
- ``znorm_demean``   : (x - mu) / sigma, then each brain voxel's mean over the clip subtracted;
  background 0. Keeps no static image. It leaks the future: the clip mean includes the frames
  a pretraining target holds, so the last frame of every voxel is minus the sum of the others.
  Refused for ``--pretraining``.
- ``voxel_demean``   : (x - m_v) / s; background 0. Keeps the fluctuations at their amplitude
  relative to the run's fluctuations (the same fluctuations give the same values whatever the
  static contrast); no static image. m_v and s are over the whole run, computed at
  preprocessing, so they include a clip's future frames: a share (T-1)/((N-1)(N-T+1)) of a
  frame of a T-frame clip follows from the others on an N-frame run (``predictable_share``;
  all of it when the clip is its whole run). ``--pretraining`` refuses runs too short for that
  share to stay under ``LEAK_LIMIT`` (1%).
- ``voxel_demean_static``: ``voxel_demean``, with one more time token (``patch T`` frames) of
  the static image, (m_v - mean) / std over the brain, in front of the clip's ``--img_size``
  frames (it takes none of them), background 0. Keeps both, as two kinds of tokens: the model
  reads anatomy and fluctuations without the static texture swamping the fluctuations. The
  tuned recipe's input.

"Background" is a raw value of exactly 0 (skull-stripped data, zero padding); for
``znorm_demean`` a voxel that is 0 in every frame of the clip, for the ``voxel_*`` scalings a
voxel outside the run's stored brain mask (its static image is 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

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
    voxel_stats: bool = False  # uses the run's per-voxel statistics (store.VoxelStats)
    static_token: bool = False  # the first time token of a clip is the static image
    keeps_static: bool = True  # what the docstring says, for tests and messages
    leaks_future: bool = False  # a pretraining target follows from earlier tokens


def _znorm(stats: Mapping[str, float]) -> tuple:
    return float(stats["mean"]), 1.0 / max(float(stats["std"]), _EPS)


def _minmax(stats: Mapping[str, float]) -> tuple:
    lo, hi = float(stats["min"]), float(stats["max"])
    return lo, 1.0 / max(hi - lo, _EPS)


def _unused(stats: Mapping[str, float]) -> tuple:
    return 0.0, 1.0


SCALING_METHODS = {
    "znorm_minback": ScalingMethod("znorm_minback", _znorm, "min"),
    "znorm_zeroback": ScalingMethod("znorm_zeroback", _znorm, "zero"),
    "minmax_minback": ScalingMethod("minmax_minback", _minmax, "min"),
    "minmax_zeroback": ScalingMethod("minmax_zeroback", _minmax, "zero"),
    "znorm_demean": ScalingMethod("znorm_demean", _znorm, "zero", demean_over_time=True,
                                  keeps_static=False, leaks_future=True),
    "voxel_demean": ScalingMethod("voxel_demean", _unused, "zero", voxel_stats=True, keeps_static=False),
    "voxel_demean_static": ScalingMethod("voxel_demean_static", _unused, "zero", voxel_stats=True,
                                         static_token=True),
}
LEAK_FREE = tuple(name for name, m in SCALING_METHODS.items() if not m.leaks_future)


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


# The share of a pretraining target that may follow from the frames before it, through a
# statistic over the whole run (the run's per-voxel mean of the voxel_* scalings includes the
# clip's own future frames). Runs shorter than min_safe_run_frames are refused for pretraining.
LEAK_LIMIT = 0.01


def predictable_share(clip_frames: int, run_frames: int) -> float:
    """The share of a voxel's last clip frame that a linear predictor recovers from the clip's
    earlier frames once the run's mean over ``run_frames`` frames is subtracted, for frames
    with no signal of their own (white noise, the worst case: a real signal is predictable for
    reasons of its own). With the mean over N frames removed, two frames covary by -1/N and
    each varies by (N-1)/N; the best predictor of one frame from T-1 others then explains
    (T-1) / ((N-1)(N-T+1)) of its variance: 1 for a clip that is its whole run, ~T/N^2 for long
    runs."""
    t, n = int(clip_frames), int(run_frames)
    if n <= t:
        return 1.0
    return (t - 1) / ((n - 1) * (n - t + 1))


def min_safe_run_frames(clip_frames: int, limit: float = LEAK_LIMIT) -> int:
    """The shortest run whose clips of ``clip_frames`` frames leak at most ``limit``."""
    n = int(clip_frames) + 1
    while predictable_share(clip_frames, n) > limit:
        n += 1
    return n


def static_time_tokens(scaling_method: str) -> int:
    """Time tokens of a clip taken by the static image: 1 or 0."""
    return int(get_scaling(scaling_method).static_token)


def static_frames_for(scaling_method: str, patch_frames: int) -> int:
    """Frames of a clip taken by the static image: one time token, or none."""
    return int(patch_frames) * static_time_tokens(scaling_method)


# ---------------------------------------------------------------------------------------------
# The data path: a clip travels as stored, and is scaled where the model runs (scale_batch)
# ---------------------------------------------------------------------------------------------
def scaling_fields(stats: Mapping[str, float], scaling_method: str, voxel=None,
                   static: bool = False) -> dict:
    """What :func:`scale_batch` needs of a clip's run besides its frames and brain mask, as
    tensors that collate: the affine (``scale_offset``, ``scale_factor``), for the ``voxel_*``
    scalings the run's mean image (``voxel_mean``), with a static token its ``static_image``."""
    import torch

    method = get_scaling(scaling_method)
    if method.voxel_stats:
        if voxel is None:
            raise ValueError(f"--input_scaling_method {scaling_method} needs the run's per-voxel "
                             "statistics (store.VoxelStats)")
        fields = {"scale_offset": torch.tensor(0.0),
                  "scale_factor": torch.tensor(np.float32(1.0 / max(voxel.fluct_std, _EPS))),
                  "voxel_mean": torch.from_numpy(np.asarray(voxel.mean_image, np.float32))}
        if static:
            fields["static_image"] = torch.from_numpy(np.asarray(voxel.static_image, np.float32))
        return fields
    offset, scale = method.affine(stats)
    return {"scale_offset": torch.tensor(np.float32(offset)), "scale_factor": torch.tensor(np.float32(scale))}


SCALING_FIELDS = ("scale_offset", "scale_factor", "voxel_mean", "static_image")


def scale_batch(stored, scaling_method: str, scale_offset, scale_factor, brain=None,
                voxel_mean=None, static_image=None, static_frames: int = 0):
    """The model's input ``(B, 1, D, H, W, static_frames + T)`` float32 from clips as stored,
    ``(B, T, D, H, W)`` in their stored dtype, on whatever device they are (after the transfer
    to the GPU: the float conversion, scaling and layout cost the DataLoader workers nothing).
    The same float32 operations, in the same order, as :func:`scale_inplace`, the reference."""
    import torch

    method = get_scaling(scaling_method)
    batch, frames = stored.shape[0], stored.shape[1]
    per_clip = (batch, 1, 1, 1, 1)
    out = torch.empty((batch, 1, *stored.shape[2:], static_frames + frames), dtype=torch.float32,
                      device=stored.device)
    x = out[:, 0, ..., static_frames:]
    x.copy_(stored.movedim(1, -1))  # one pass: float32, time last; then in place, as the reference
    if method.voxel_stats:
        x.sub_(voxel_mean.to(torch.float32)[..., None]).mul_(scale_factor.to(torch.float32).view(per_clip))
        x.masked_fill_(~brain.to(torch.bool)[..., None], 0.0)
    else:
        background = None
        if method.demean_over_time:
            background = ~(x != 0).any(dim=-1, keepdim=True)  # 0 in every frame
        elif method.background == "zero":
            background = x == 0
        x.sub_(scale_offset.to(torch.float32).view(per_clip)).mul_(scale_factor.to(torch.float32).view(per_clip))
        if method.demean_over_time:
            x.sub_(x.mean(dim=-1, keepdim=True, dtype=torch.float64).to(torch.float32))
        if background is not None:
            x.masked_fill_(background, 0.0)
    if static_frames:
        out[:, 0, ..., :static_frames] = static_image.to(torch.float32)[..., None]
    return out


def scale_inplace(raw: np.ndarray, stats: Mapping[str, float], scaling_method: str,
                  voxel=None) -> np.ndarray:
    """The reference scaling, in NumPy (tests compare :func:`scale_batch` with it): scale a
    float32 array of raw values in place and return it. ``raw`` is one clip with
    time on the last axis, ``(D, H, W, T)``; ``voxel`` (a :class:`store.VoxelStats`) is
    needed by the ``voxel_*`` scalings."""
    method = get_scaling(scaling_method)
    if method.voxel_stats:
        if voxel is None:
            raise ValueError(f"--input_scaling_method {scaling_method} needs the run's per-voxel "
                             "statistics (store.VoxelStats)")
        brain = voxel.brain if voxel.brain is not None else voxel.mean_image != 0
        raw -= voxel.mean_image[..., None]
        raw *= np.float32(1.0 / max(voxel.fluct_std, _EPS))
        raw[~brain] = 0.0
        return raw
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


def scale_clip(raw_dhwt: np.ndarray, stats: Mapping[str, float], scaling_method: str,
               voxel=None, static_frames: int = 0) -> np.ndarray:
    """The model's clip (D, H, W, static_frames + T) from ``raw_dhwt`` (float32, scaled in
    place): the static image first when the scaling has a static token."""
    clip = scale_inplace(raw_dhwt, stats, scaling_method, voxel)
    if not static_frames:
        return clip
    out = np.empty(clip.shape[:3] + (static_frames + clip.shape[3],), np.float32)
    out[..., :static_frames] = voxel.static_image[..., None]
    out[..., static_frames:] = clip
    return out
