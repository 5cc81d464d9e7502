"""Tiny synthetic NIfTI runs for the data tests (shared helpers)."""
from __future__ import annotations

import numpy as np

SHAPE = (30, 34, 28, 6)          # X, Y, Z, T of the test NIfTIs
TARGET = (24, 24, 24)            # model grid in the tests
BRAIN = (slice(5, 20), slice(8, 25), slice(4, 22))  # brain box: extents 15, 17, 18


def brain_run(seed: int = 0, shape=SHAPE, brain=BRAIN, scale: float = 1.0,
              integer: bool = True) -> np.ndarray:
    """A run with a box 'brain' of positive values and exact-zero background."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    box = rng.uniform(100, 2000, data[brain].shape)
    data[brain] = (np.round(box) if integer else box) * scale
    return data


# World position of voxel (0, 0, 0) (RAS, on the 2 mm lattice): puts the BRAIN box's centre near
# the MNI152 brain centre, as registered data would be.
ORIGIN_MM = (-24.0, -50.0, -20.0)


def save_nifti(path, data, voxel=2.0):
    import nibabel as nib

    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = ORIGIN_MM
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


