"""The world grid: one fixed voxel grid, defined in world (scanner/MNI) millimetres, that every
run of a dataset is placed on, so the same anatomy lands on the same token for every subject.

The grid is

* in the canonical orientation **LAS** (array axis 0 runs right->Left, 1 posterior->Anterior,
  2 inferior->Superior). That is how FSL stores its MNI152 templates and how the HCP, UK Biobank
  and ABCD pipelines write their data, which is what the released checkpoints were trained on;
  fMRIPrep/nilearn data (stored RAS) are flipped on the first axis, exactly, to match;
* isotropic, with voxel centres on the lattice ``k * voxel_size`` mm through the world origin
  (the anterior commissure in MNI space). Every standard MNI grid of that voxel size (FSL's
  91x109x91, fMRIPrep's 97x115x97, nilearn's 99x117x95 at 2 mm) lies on that lattice, so such
  runs are placed by an integer offset, without interpolation;
* positioned so the centre of the MNI152 brain's bounding box sits at the centre of the grid.

A run whose (reoriented) grid is not an integer offset of the world grid (another voxel size,
an oblique affine, a half-voxel phase) is resampled into it with nilearn.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Sequence

import numpy as np

CANONICAL_AXCODES = ("L", "A", "S")
# Centre (mm) of the bounding box of nilearn's MNI152 brain mask (the same at 1 and 2 mm);
# tests/data/test_world_grid.py recomputes it from the template nilearn ships.
MNI152_BRAIN_CENTRE_MM = (0.0, -17.0, 5.0)
# A brain whose bounding-box centre is further than this from the MNI one is not in MNI space.
MAX_MNI_OFFSET_MM = 30.0
# Offsets within this fraction of a voxel (and rotations/zooms within it) count as exact.
ALIGNMENT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class WorldGrid:
    """``shape`` voxels of ``voxel_size`` mm, in LAS, with voxel->world ``affine`` (4x4)."""

    shape: tuple
    voxel_size: float
    affine: tuple  # row-major nested tuples

    @property
    def affine_array(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=float)


def world_grid(shape: Sequence[int], voxel_size: float,
               centre_mm: Sequence[float] = MNI152_BRAIN_CENTRE_MM) -> WorldGrid:
    """The LAS grid of ``shape`` at ``voxel_size`` mm whose centre is the lattice point nearest
    ``centre_mm``.

    Per axis with step ``s`` (-v on x, +v on y and z) the origin (world coordinate of voxel 0)
    is ``s * k`` for the integer ``k`` that brings voxel ``(n - 1) / 2`` nearest to the centre;
    ties are broken upwards (``floor(x + 0.5)``) so the rule never depends on banker's rounding.
    """
    shape = tuple(int(n) for n in shape)
    v = float(voxel_size)
    if len(shape) != 3 or min(shape) < 1 or not np.isfinite(v) or v <= 0:
        raise ValueError(f"a world grid needs 3 positive sizes and a positive voxel size, got "
                         f"{shape} at {voxel_size} mm")
    steps = np.array([-v, v, v])
    origin = [s * np.floor(c / s - (n - 1) / 2 + 0.5) for s, c, n in zip(steps, centre_mm, shape)]
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = origin
    return WorldGrid(shape, v, tuple(tuple(float(x) for x in row) for row in affine))


def orientation_to_canonical(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform ((axis, flip) per axis) taking an array with voxel->world
    ``affine`` to the canonical LAS orientation."""
    from nibabel import orientations as ornt

    return ornt.ornt_transform(ornt.io_orientation(np.asarray(affine, dtype=float)),
                               ornt.axcodes2ornt(CANONICAL_AXCODES))


def reorient(array: np.ndarray, affine: np.ndarray, transform: np.ndarray) -> tuple:
    """Apply an orientation ``transform`` to the first 3 axes of ``array`` (a view: flips and
    axis swaps only, values untouched); returns (array, its new affine)."""
    from nibabel import orientations as ornt

    transform = np.asarray(transform, dtype=float)
    spatial = array.shape[:3]
    moved = ornt.apply_orientation(array, transform)
    new_affine = np.asarray(affine, dtype=float) @ ornt.inv_ornt_aff(transform, spatial)
    return moved, new_affine


def inverse_orientation(transform: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``transform``: input axis ``i`` went to axis
    ``transform[i, 0]`` (flipped when ``transform[i, 1]`` is -1), so that axis comes back to ``i``."""
    transform = np.asarray(transform, dtype=float)
    inverse = np.empty_like(transform)
    for axis, (target, flip) in enumerate(transform):
        inverse[int(target)] = (axis, flip)
    return inverse


def undo_reorient(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Inverse of :func:`reorient` on the array (exact)."""
    from nibabel import orientations as ornt

    return ornt.apply_orientation(array, inverse_orientation(transform))


def integer_offset(grid_affine: np.ndarray, affine: np.ndarray,
                   tolerance: float = ALIGNMENT_TOLERANCE):
    """The integer per-axis shift ``j = i + shift`` from an input grid (``affine``) to the
    world grid, or None when the input is not an exact integer offset of it (then resample)."""
    mapping = np.linalg.solve(np.asarray(grid_affine, dtype=float), np.asarray(affine, dtype=float))
    if not np.allclose(mapping[:3, :3], np.eye(3), atol=tolerance, rtol=0):
        return None
    shift = mapping[:3, 3]
    rounded = np.round(shift)
    if np.any(np.abs(shift - rounded) > tolerance):
        return None
    return tuple(int(s) for s in rounded)


def world_voxel_size(zooms: Sequence[float], resample_to: float | None, path: str) -> float:
    """The grid's voxel size: ``--resample_to`` if given, else the input's (isotropic) size."""
    if resample_to is not None:
        return float(resample_to)
    zooms = np.asarray(zooms, dtype=float)
    if np.ptp(zooms) > ALIGNMENT_TOLERANCE * zooms.max():
        raise ValueError(f"{path}: anisotropic voxels {tuple(round(float(z), 4) for z in zooms)} mm; "
                         f"the model's grid is isotropic: pass --resample_to MM (e.g. 2) to "
                         f"resample onto it")
    return float(np.round(zooms.mean(), 6))


def brain_centre_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinate (mm) of the centre of the mask's bounding box."""
    idx = np.argwhere(mask)
    centre = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    return np.asarray(affine, dtype=float)[:3, :3] @ centre + np.asarray(affine, dtype=float)[:3, 3]


def check_registered(mask: np.ndarray, affine: np.ndarray, path: str,
                     max_offset_mm: float = MAX_MNI_OFFSET_MM) -> None:
    """Refuse a brain whose centre is far from the MNI152 brain's: its affine is not MNI."""
    centre = brain_centre_mm(mask, affine)
    offset = float(np.linalg.norm(centre - np.asarray(MNI152_BRAIN_CENTRE_MM)))
    if offset > max_offset_mm:
        raise ValueError(
            f"{path}: does not look registered to MNI space: its brain is centred at "
            f"({centre[0]:.0f}, {centre[1]:.0f}, {centre[2]:.0f}) mm, {offset:.0f} mm from the MNI152 "
            f"brain centre {MNI152_BRAIN_CENTRE_MM}; register it to MNI first, or pass "
            f"--placement brain_centre for data in its own space")


# Registered runs overlap the MNI152 brain mask well above this (Dice; the template's own mask
# scores 0.97+); the MNI brain rotated 15 degrees and shifted 15 mm scores 0.80, shifted 15 mm
# alone 0.83, while its centre passes the distance check.
MIN_MNI_DICE = 0.85


@functools.lru_cache(maxsize=1)
def _mni_brain_2mm():
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    return np.asarray(img.dataobj) > 0, np.asarray(img.affine, dtype=float)


def _share_inside(points_idx: np.ndarray, from_affine: np.ndarray, mask: np.ndarray,
                  mask_affine: np.ndarray) -> float:
    """Share of the voxels ``points_idx`` (on ``from_affine``) whose centre falls in ``mask``."""
    if not len(points_idx):
        return 0.0
    to_mask = np.linalg.inv(mask_affine) @ from_affine
    pos = np.rint(points_idx @ to_mask[:3, :3].T + to_mask[:3, 3]).astype(int)
    inside = np.all((pos >= 0) & (pos < np.asarray(mask.shape)), axis=1)
    hits = np.zeros(len(pos), bool)
    hits[inside] = mask[pos[inside, 0], pos[inside, 1], pos[inside, 2]]
    return float(hits.mean())


def mni_dice(mask: np.ndarray, affine: np.ndarray, max_points: int = 200_000) -> float:
    """Dice overlap (by volume, in mm^3) of a run's brain mask with nilearn's MNI152 brain
    mask: each mask's voxel centres looked up in the other, subsampled to ``max_points``."""
    mni, mni_affine = _mni_brain_2mm()
    run_idx, mni_idx = np.argwhere(mask), np.argwhere(mni)
    if not len(run_idx):
        return 0.0
    run_volume = len(run_idx) * abs(np.linalg.det(np.asarray(affine, float)[:3, :3]))
    mni_volume = len(mni_idx) * abs(np.linalg.det(mni_affine[:3, :3]))
    step_run = max(1, len(run_idx) // max_points)
    step_mni = max(1, len(mni_idx) // max_points)
    in_mni = _share_inside(run_idx[::step_run], affine, mni, mni_affine) * run_volume
    in_run = _share_inside(mni_idx[::step_mni], mni_affine, np.asarray(mask, bool), affine) * mni_volume
    return float((in_mni + in_run) / (run_volume + mni_volume))  # 2|A∩B| / (|A| + |B|), both estimates


def registration_warning(mask: np.ndarray, affine: np.ndarray, path: str) -> list:
    """One line when the run's brain overlaps the MNI brain less than registered runs do."""
    dice = mni_dice(mask, affine)
    if dice >= MIN_MNI_DICE:
        return []
    return [f"{path}: its brain overlaps the MNI152 brain at Dice {dice:.2f} (registered runs: "
            f"{MIN_MNI_DICE:g} or more); it may be rotated, shifted or not in MNI space, so the same "
            f"anatomy would not land on the same token; check its registration"]
