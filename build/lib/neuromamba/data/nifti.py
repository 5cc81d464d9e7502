"""Read and validate 4D NIfTI runs, resample them, and crop/pad them to the model grid.

How a run is placed on the model grid (the world grid of :mod:`.grid`, or per-run brain
centring) is decided in :mod:`.placement` and recorded as a :class:`CropPadRecord`, so any map
on the model grid can be put back into the input's own grid (:func:`to_source_space`). Axis
order: NIfTI data is (X, Y, Z, T); after reorientation to LAS the spatial axes are (D, H, W).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# Voxel sizes outside this range (mm) are almost certainly a broken header.
SANE_VOXEL_SIZE_MM = (0.2, 10.0)


@dataclass(frozen=True)
class CropPadRecord:
    """How the model grid relates to the input file's grid.

    source (the file as read: ``source_shape``, ``source_affine``) --[``orientation``: flips and
    axis swaps to LAS, exact]--> --[nilearn resampling, only when ``resampled``]--> the
    "original" grid (``original_shape``, ``affine``) --[integer ``shift``]--> the model grid.
    A voxel at original index ``i`` (per axis) sits at model-grid index ``i + shift``; model-grid
    voxels whose original index falls outside ``original_shape`` are padding (raw 0).
    ``placement`` says how the shift was chosen: ``world`` (the dataset's world grid; the model
    grid's affine is :attr:`target_affine`), ``brain_centre`` (each run's own brain box) or
    ``legacy``.
    """

    original_shape: tuple
    target_shape: tuple
    shift: tuple
    affine: tuple  # 4x4, row-major nested tuples
    brain_bbox: tuple  # ((lo, hi) per axis), hi exclusive, in original indices
    source_shape: tuple
    source_affine: tuple
    resampled: bool
    orientation: tuple = ((0.0, 1.0), (1.0, 1.0), (2.0, 1.0))  # nibabel ornt: source -> original
    placement: str = "brain_centre"

    @property
    def target_affine(self) -> np.ndarray:
        """Affine of the model grid: model index j is original index j - shift."""
        translate = np.eye(4)
        translate[:3, 3] = -np.asarray(self.shift, dtype=float)
        return np.asarray(self.affine, dtype=float) @ translate

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "CropPadRecord":
        raw = json.loads(text)
        return cls(**{k: _to_tuple(v) for k, v in raw.items()})


def _to_tuple(value):
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


def _nested_tuple(array: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(array))


# ---------------------------------------------------------------------------------------------
# Reading and validation
# ---------------------------------------------------------------------------------------------
def load_nifti(path: str | Path):
    """Load a NIfTI image header (data stays lazy); a clear error if the file cannot be parsed."""
    import nibabel as nib

    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{path}: broken or looping symbolic link")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err


def read_nifti_data(img, path: str | Path) -> np.ndarray:
    """Read the voxel array (float32); truncated/corrupt files raise a ValueError naming the file."""
    if np.dtype(img.get_data_dtype()).kind == "c":
        raise ValueError(f"{path}: complex-valued voxels ({img.get_data_dtype()}): give the "
                         f"magnitude image (a real-valued 4D NIfTI)")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # EOFError, zlib.error, OSError for truncated .nii.gz
        raise ValueError(f"{path}: cannot read voxel data, file truncated or corrupt "
                         f"({type(err).__name__}: {err})") from err
    return data


def validate_header(img, path: str | Path, min_frames: int) -> None:
    """Shape and voxel-size checks that need no voxel data."""
    shape = img.shape
    if len(shape) != 4:
        raise ValueError(f"{path}: expected a 4D (X, Y, Z, T) image, got {len(shape)}D shape {shape}")
    if shape[3] < min_frames:
        raise ValueError(f"{path}: {shape[3]} frames, fewer than the required {min_frames} "
                         f"(--min_frames)")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    lo, hi = SANE_VOXEL_SIZE_MM
    if not np.all(np.isfinite(zooms)) or np.any(zooms < lo) or np.any(zooms > hi):
        raise ValueError(f"{path}: implausible voxel size {tuple(zooms)} mm "
                         f"(expected between {lo} and {hi} mm)")
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ValueError(f"{path}: affine is not finite or not invertible")
    from_affine = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(zooms, from_affine, rtol=0.01):
        raise ValueError(f"{path}: the header's voxel size {tuple(round(float(z), 4) for z in zooms)} "
                         f"mm disagrees with its affine's {tuple(round(float(z), 4) for z in from_affine)} "
                         f"mm (a broken pixdim, e.g. a 0 width); fix the header before preprocessing")


def validate_data(data: np.ndarray, path: str | Path) -> None:
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise ValueError(f"{path}: {bad} non-finite voxel values (NaN/inf)")
    if not np.any(data):
        raise ValueError(f"{path}: all voxels are zero (no brain)")


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------
def needs_resampling(img, voxel_size_mm: float, tolerance: float = 1e-3) -> bool:
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    return bool(np.any(np.abs(zooms - voxel_size_mm) > tolerance))


def voxel_size_grid(affine: np.ndarray, shape: Sequence[int], voxel_size_mm: float) -> tuple:
    """(affine, shape) of the grid that keeps ``affine``'s origin and axis directions at an
    isotropic ``voxel_size_mm`` and covers the same field of view."""
    affine = np.asarray(affine, dtype=float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    target_affine = affine.copy()
    target_affine[:3, :3] = affine[:3, :3] / zooms * voxel_size_mm
    target_shape = tuple(int(np.ceil(s * z / voxel_size_mm)) for s, z in zip(shape[:3], zooms))
    return target_affine, target_shape


def nilearn_resample(image, target_affine: np.ndarray, target_shape: Sequence[int],
                     interpolation: str):
    from nilearn.image import resample_img  # slow import: only when needed

    kwargs = dict(target_affine=np.asarray(target_affine, dtype=float),
                  target_shape=tuple(int(s) for s in target_shape), interpolation=interpolation)
    try:
        return resample_img(image, copy_header=True, force_resample=True, **kwargs)
    except TypeError:  # older nilearn without these keywords
        return resample_img(image, **kwargs)


def resample_onto(data: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                  target_affine: np.ndarray, target_shape: Sequence[int]) -> tuple:
    """Resample a 4D run and its brain mask onto another grid; returns (float32 data, mask).

    Values use continuous (spline) interpolation, which rings into the background, so the brain
    mask is resampled with nearest-neighbour interpolation and the background set back to 0.
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=float)
    values = nilearn_resample(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine),
                              target_affine, target_shape, "continuous")
    mask_img = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), affine)
    new_mask = np.asarray(nilearn_resample(mask_img, target_affine, target_shape,
                                           "nearest").dataobj) > 0
    out = np.asarray(values.dataobj, dtype=np.float32) * new_mask[..., None]
    return out, new_mask


# ---------------------------------------------------------------------------------------------
# Crop / pad
# ---------------------------------------------------------------------------------------------
def brain_mask_of(data: np.ndarray) -> np.ndarray:
    """Brain = voxels that are non-zero in at least one frame (skull-stripped input without a
    mask file)."""
    return np.any(data != 0, axis=-1) if data.ndim == 4 else data != 0


def brain_bounding_box(mask: np.ndarray) -> tuple:
    if not mask.any():
        raise ValueError("brain mask is empty")
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append((int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def plan_crop_pad(mask: np.ndarray, target_shape: Sequence[int], affine: np.ndarray, *,
                  allow_crop_brain: bool = False, path: str | Path = "<array>",
                  source_shape=None, source_affine=None, resampled: bool = False) -> CropPadRecord:
    """Centre the brain bounding box in ``target_shape``; error if the brain does not fit."""
    target_shape = tuple(int(s) for s in target_shape)
    bbox = brain_bounding_box(mask)
    shift = []
    for (lo, hi), size in zip(bbox, target_shape):
        extent = hi - lo
        if extent > size and not allow_crop_brain:
            raise ValueError(
                f"{path}: brain extent {tuple(h - l for l, h in bbox)} voxels does not fit the "
                f"target grid {target_shape}; use a larger --target_shape, resample "
                f"(--resample_to), or pass --allow_crop_brain to cut the brain's edges")
        # Brain centre (lo + hi) / 2 goes to the grid centre size / 2 (integer shift).
        shift.append(int((size - extent) // 2 - lo))
    return CropPadRecord(
        original_shape=tuple(int(s) for s in mask.shape),
        target_shape=target_shape,
        shift=tuple(shift),
        affine=_nested_tuple(affine),
        brain_bbox=bbox,
        source_shape=tuple(int(s) for s in (source_shape or mask.shape)),
        source_affine=_nested_tuple(affine if source_affine is None else source_affine),
        resampled=bool(resampled),
    )


def _axis_slices(record: CropPadRecord):
    """Per axis: (slice in original grid, slice in target grid) of the overlapping region."""
    src, dst = [], []
    for n_orig, n_tgt, s in zip(record.original_shape, record.target_shape, record.shift):
        start = max(0, -s)
        stop = min(n_orig, n_tgt - s)
        if stop <= start:
            raise ValueError("crop/pad record leaves no overlap between grids")
        src.append(slice(start, stop))
        dst.append(slice(start + s, stop + s))
    return tuple(src), tuple(dst)


def apply_crop_pad(volume: np.ndarray, record: CropPadRecord, fill: float = 0.0) -> np.ndarray:
    """Original grid -> model grid. Leading 3 axes spatial, trailing axes (e.g. time) kept."""
    src, dst = _axis_slices(record)
    out = np.full(tuple(record.target_shape) + volume.shape[3:], fill, dtype=volume.dtype)
    out[dst] = volume[src]
    return out


def crop_pad_frames(data_xyzt: np.ndarray, record: CropPadRecord, dtype=np.float32) -> np.ndarray:
    """(X, Y, Z, T) input -> (T, D, H, W) C-contiguous model-grid frames (each TR contiguous,
    so statistics and the per-TR HDF5 writes run over contiguous memory)."""
    src, dst = _axis_slices(record)
    frames = data_xyzt.shape[3]
    out = np.zeros((frames,) + tuple(record.target_shape), dtype=dtype)
    view = np.moveaxis(data_xyzt, -1, 0)
    for t in range(frames):  # frame by frame: cache-friendly for F-ordered NIfTI arrays
        out[t][dst] = view[t][src]
    return out


def to_original_space(volume: np.ndarray, record: CropPadRecord, fill: float = 0.0) -> np.ndarray:
    """Model grid -> original grid (the inverse of :func:`apply_crop_pad` on the kept region).

    ``volume`` has the target shape in its leading 3 axes (trailing axes kept). Voxels that were
    cropped away get ``fill``. Write the result with ``record.affine`` to get a NIfTI aligned
    with the (possibly resampled) input.
    """
    volume = np.asarray(volume)
    if tuple(volume.shape[:3]) != tuple(record.target_shape):
        raise ValueError(f"volume spatial shape {volume.shape[:3]} != record target shape "
                         f"{record.target_shape}")
    src, dst = _axis_slices(record)
    out = np.full(tuple(record.original_shape) + volume.shape[3:], fill, dtype=volume.dtype)
    out[src] = volume[dst]
    return out


def to_source_array(volume: np.ndarray, record: CropPadRecord, fill: float = 0.0) -> np.ndarray:
    """Model grid -> the input file's own voxel array (undoing the crop/pad and the
    reorientation exactly). Only for runs that were not resampled (see :func:`to_source_space`)."""
    from .grid import undo_reorient

    if record.resampled:
        raise ValueError("the run was resampled: map it back with to_source_space")
    back = to_original_space(np.asarray(volume), record, fill)
    return np.ascontiguousarray(undo_reorient(back, np.asarray(record.orientation)))


def to_source_space(volume: np.ndarray, record: CropPadRecord, interpolation: str = "continuous",
                    fill: float = 0.0):
    """Model grid -> the input file's own grid, as a nibabel image with the input's affine.

    Without resampling this is exact (:func:`to_source_array`); with it, the map is resampled
    back to ``source_shape``/``source_affine`` with nilearn. 3D volumes, or 4D with one trailing
    axis (e.g. time).
    """
    import nibabel as nib

    if not record.resampled:
        back = to_source_array(np.asarray(volume, dtype=np.float32), record, fill)
        return nib.Nifti1Image(back, np.asarray(record.source_affine))
    back = to_original_space(np.asarray(volume, dtype=np.float32), record, fill)
    image = nib.Nifti1Image(back, np.asarray(record.affine))
    return nilearn_resample(image, record.source_affine, record.source_shape, interpolation)


def original_index(target_index: Sequence[int], record: CropPadRecord) -> tuple:
    """Model-grid voxel index -> original voxel index (may fall outside: that voxel is padding)."""
    return tuple(int(j) - s for j, s in zip(target_index, record.shift))


def target_index(orig_index: Sequence[int], record: CropPadRecord) -> tuple:
    """Original voxel index -> model-grid voxel index (may fall outside: that voxel was cropped)."""
    return tuple(int(i) + s for i, s in zip(orig_index, record.shift))
