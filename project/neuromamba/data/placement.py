"""Where a run goes on the model grid: the dataset's world grid (default) or per-run centring.

``world``: reorient to LAS, then place by the affine on the world grid of :mod:`.grid` (an
integer offset when the input lies on its lattice, nilearn resampling otherwise). Every run on
the same input grid gets the same placement, whatever its brain mask looks like, so the same
MNI voxel is the same token for every subject.

``brain_centre``: reorient to LAS, optionally resample to ``--resample_to``, then centre each
run's own brain bounding box. Only for data that is not in a standard space: two subjects'
anatomy then lands on different tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import grid, nifti

PLACEMENTS = ("world", "brain_centre")
# Below this fraction of the grid on every axis the model sees mostly padding.
MIN_BRAIN_FILL = 0.5


@dataclass
class PlacedRun:
    data: np.ndarray        # (X, Y, Z, T) raw values on the record's "original" grid
    mask: np.ndarray        # brain mask on the same grid
    record: nifti.CropPadRecord
    voxel_size: tuple       # mm, of the model grid
    warnings: list = field(default_factory=list)


def check_placement(name: str) -> str:
    if name not in PLACEMENTS:
        raise ValueError(f"--placement {name!r}: choose one of {PLACEMENTS}")
    return name


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def place_run(data: np.ndarray, mask: np.ndarray, affine: np.ndarray, *,
              target_shape: Sequence[int], placement: str = "world",
              resample_to: float | None = None, allow_crop_brain: bool = False,
              path: str = "<array>") -> PlacedRun:
    """Place a (X, Y, Z, T) run and its brain mask (both on the input grid ``affine``)."""
    check_placement(placement)
    target_shape = tuple(int(s) for s in target_shape)
    source_affine = np.asarray(affine, dtype=float)
    source_shape = tuple(int(s) for s in data.shape[:3])
    transform = grid.orientation_to_canonical(source_affine)
    data, affine = grid.reorient(data, source_affine, transform)
    mask, _ = grid.reorient(mask, source_affine, transform)
    if placement == "world":
        voxel = grid.world_voxel_size(voxel_sizes(affine), resample_to, path)
        world = grid.world_grid(target_shape, voxel)
        # Checked on the input's own voxels: resampling onto the world grid would drop the
        # brain outside it without a trace.
        grid.check_registered(mask, affine, path)
        _check_fits_world(mask, affine, world, allow_crop_brain, path)
        shift = grid.integer_offset(world.affine_array, affine)
        resampled = shift is None
        if resampled:
            data, mask = nifti.resample_onto(data, mask, affine, world.affine_array, world.shape)
            affine, shift = world.affine_array, (0, 0, 0)
        record = nifti.CropPadRecord(
            original_shape=tuple(int(s) for s in data.shape[:3]), target_shape=target_shape,
            shift=tuple(shift), affine=nifti._nested_tuple(affine),
            brain_bbox=nifti.brain_bounding_box(mask), source_shape=source_shape,
            source_affine=nifti._nested_tuple(source_affine), resampled=resampled,
            orientation=_ornt_tuple(transform), placement="world")
    else:
        resampled = resample_to is not None and bool(
            np.any(np.abs(voxel_sizes(affine) - float(resample_to)) > grid.ALIGNMENT_TOLERANCE))
        if resampled:
            new_affine, new_shape = nifti.voxel_size_grid(affine, data.shape, float(resample_to))
            data, mask = nifti.resample_onto(data, mask, affine, new_affine, new_shape)
            affine = new_affine
        record = nifti.plan_crop_pad(mask, target_shape, affine, allow_crop_brain=allow_crop_brain,
                                     path=path, source_shape=source_shape,
                                     source_affine=source_affine, resampled=resampled)
        record = _with(record, orientation=_ornt_tuple(transform), placement="brain_centre")
    voxel = tuple(float(round(v, 6)) for v in voxel_sizes(record.target_affine))
    notes = _fill_warnings(record, voxel, path)
    if placement == "world":
        notes += grid.registration_warning(mask, affine, path)
    return PlacedRun(data, mask, record, voxel, notes)


def _with(record: nifti.CropPadRecord, **changes) -> nifti.CropPadRecord:
    from dataclasses import replace

    return replace(record, **changes)


def _ornt_tuple(transform: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(transform))


def _check_fits_world(mask: np.ndarray, affine: np.ndarray, world, allow_crop_brain: bool,
                      path: str) -> None:
    """Every brain voxel of the input (its centre, in mm) must lie inside the world grid
    (unless cropping is allowed), whatever the voxel sizes of the two."""
    idx = np.argwhere(mask)
    if not len(idx):
        return
    to_world_voxels = np.linalg.inv(world.affine_array) @ np.asarray(affine, dtype=float)
    pos = idx @ to_world_voxels[:3, :3].T + to_world_voxels[:3, 3]
    outside = int(np.count_nonzero(np.any((pos < -0.5) | (pos > np.asarray(world.shape) - 0.5), axis=1)))
    if outside and not allow_crop_brain:
        share = 100.0 * outside / len(idx)
        extent = tuple(round(n * world.voxel_size) for n in world.shape)
        raise ValueError(
            f"{path}: {outside} brain voxels ({share:.1f}% of the brain) fall outside the "
            f"{tuple(world.shape)} world grid at {world.voxel_size:g} mm ({extent[0]}x{extent[1]}x"
            f"{extent[2]} mm); use a larger --target_shape or another --resample_to, or pass "
            f"--allow_crop_brain to cut them")


def _fill_warnings(record: nifti.CropPadRecord, voxel: tuple, path: str) -> list:
    extent = np.array([hi - lo for lo, hi in record.brain_bbox], dtype=float)
    fill = extent / np.asarray(record.target_shape, dtype=float)
    if np.all(fill < MIN_BRAIN_FILL):
        return [f"{path}: the brain spans only {tuple(int(e) for e in extent)} of the "
                f"{tuple(record.target_shape)} grid at {voxel[0]:g} mm, so the model sees mostly "
                f"padding (the released checkpoints expect 2 mm in 96x96x96); consider "
                f"--resample_to 2 or a smaller --target_shape"]
    return []
