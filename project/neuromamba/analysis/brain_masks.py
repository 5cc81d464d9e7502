"""Brain masks for FLOPs accounting: voxel masks -> token masks (SPEC §3).

A token (one ``pD x pH x pW x pT`` patch) is brain if ANY of its voxels is brain; with the
original's batch-shared rule the token masks of a batch are OR-ed, so every sample keeps the
same tokens. The time axis does not change a static voxel mask, so the kept fraction of the
4D grid equals the kept fraction of the spatial grid.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np


def token_mask_from_voxels(voxel_mask: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """``(D, H, W)`` bool voxel mask -> ``(D/pD, H/pH, W/pW)`` bool token mask (any-voxel rule)."""
    voxel_mask = np.asarray(voxel_mask, dtype=bool)
    if voxel_mask.ndim != 3:
        raise ValueError(f"voxel mask must be 3D, got shape {voxel_mask.shape}")
    pd, ph, pw = (int(p) for p in patch_size[:3])
    D, H, W = voxel_mask.shape
    if D % pd or H % ph or W % pw:
        raise ValueError(f"mask shape {voxel_mask.shape} is not divisible by patch {patch_size[:3]}")
    blocks = voxel_mask.reshape(D // pd, pd, H // ph, ph, W // pw, pw)
    return blocks.any(axis=(1, 3, 5))


def batch_shared_token_mask(token_masks: Iterable[np.ndarray]) -> np.ndarray:
    """The original's rule: a token is kept for the whole batch if it is brain in any sample."""
    masks = [np.asarray(m, dtype=bool) for m in token_masks]
    if not masks:
        raise ValueError("need at least one token mask")
    return np.logical_or.reduce(masks)


def kept_tokens(token_mask: np.ndarray, time_tokens: int) -> int:
    """Number of kept tokens of a clip: spatial tokens kept x temporal tokens."""
    return int(np.count_nonzero(token_mask)) * int(time_tokens)


def center_in_box(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Crop ``mask`` to its bounding box and centre it in an array of ``shape`` (cropping the
    box symmetrically where it is larger) — the same rule as the crop/pad of preprocessing."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the brain mask is empty")
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    out = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    src, dst = [], []
    for size, target in zip(box.shape, out.shape):
        if size <= target:
            start = (target - size) // 2
            src.append(slice(0, size))
            dst.append(slice(start, start + size))
        else:
            start = (size - target) // 2
            src.append(slice(start, start + target))
            dst.append(slice(0, target))
    out[tuple(dst)] = box[tuple(src)]
    return out


def dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    """Binary dilation by ``voxels`` steps of the 6-neighbourhood (a looser brain mask)."""
    if voxels <= 0:
        return np.asarray(mask, dtype=bool)
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=int(voxels))


def mni152_voxel_mask(
    spatial_size: Sequence[int] = (96, 96, 96), dilation_voxels: int = 0,
    voxel_size_mm: float = 2.0,
) -> np.ndarray:
    """nilearn's MNI152 brain mask at 2 mm (package data, no download), optionally dilated,
    placed on the world grid of ``spatial_size`` voxels of ``voxel_size_mm`` exactly as
    preprocessing places MNI runs (``--resample_to``)."""
    from nilearn.datasets import load_mni152_brain_mask

    from neuromamba.data.nifti import apply_crop_pad
    from neuromamba.data.placement import place_run

    img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(img.get_fdata()) > 0
    affine = np.asarray(img.affine, dtype=float).copy()
    # Dilate on a padded array (its origin moved out by the padding) so grown voxels fit.
    pad = max(int(dilation_voxels), 0)
    if pad:
        mask = dilate(np.pad(mask, pad), pad)
        affine[:3, 3] -= affine[:3, :3] @ np.full(3, float(pad))
    resample = None if abs(float(voxel_size_mm) - 2.0) < 1e-6 else float(voxel_size_mm)
    placed = place_run(mask[..., None].astype(np.float32), mask, affine,
                       target_shape=tuple(int(s) for s in spatial_size), allow_crop_brain=True,
                       resample_to=resample, path="nilearn MNI152 brain mask")
    return apply_crop_pad(placed.mask, placed.record).astype(bool)


def shifted(mask: np.ndarray, offset: Tuple[int, int, int]) -> np.ndarray:
    """``mask`` shifted by ``offset`` voxels (no wrap-around): inter-subject placement jitter."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for o, n in zip(offset, mask.shape):
        o = int(o)
        if o >= 0:
            src.append(slice(0, n - o))
            dst.append(slice(o, n))
        else:
            src.append(slice(-o, n))
            dst.append(slice(0, n + o))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def jittered_batch(
    mask: np.ndarray, batch_size: int, max_shift: int, seed: int = 0
) -> list:
    """``batch_size`` copies of ``mask`` shifted by random offsets in ``[-max_shift, max_shift]``
    (the first unshifted): a stand-in for anatomical variation across subjects in one batch."""
    rng = np.random.default_rng(seed)
    masks = [np.asarray(mask, dtype=bool)]
    for _ in range(batch_size - 1):
        offset = tuple(int(v) for v in rng.integers(-max_shift, max_shift + 1, size=3))
        masks.append(shifted(mask, offset))
    return masks


def voxel_mask_from_frames(frames: np.ndarray, background: Optional[float] = None) -> np.ndarray:
    """Brain voxels of a clip ``(D, H, W, T)``: a voxel is brain if any frame differs from the
    background value (default: the clip minimum, as under ``znorm_minback``)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4:
        raise ValueError(f"frames must be (D, H, W[, T]), got shape {frames.shape}")
    bg = float(frames.min()) if background is None else float(background)
    return (frames != bg).any(axis=-1)


def mask_from_nifti(path: str, spatial_size: Sequence[int]) -> np.ndarray:
    """A brain mask from a NIfTI file (non-zero = brain; 4D files use any frame), centred by
    its bounding box in ``spatial_size``."""
    import os

    from neuromamba.data.nifti import load_nifti, read_nifti_data

    if not os.path.exists(path):
        raise FileNotFoundError(f"mask file not found: {path}")
    # The data module's readers: an unreadable file is a one-line ValueError naming it.
    data = read_nifti_data(load_nifti(path), path)
    if data.ndim == 4:
        data = (data != 0).any(axis=-1)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (or 4D) image, got shape {data.shape}")
    return center_in_box(data != 0, spatial_size)
