"""Brain masks for runs that are not skull-stripped to exact zeros (fMRIPrep and friends).

fMRIPrep writes ``*_desc-preproc_bold.nii.gz`` with a non-zero background and the brain mask
beside it as ``*_desc-brain_mask.nii.gz`` (BIDS derivatives naming). A mask is applied before
anything else (statistics, placement, the stored ``brain_mask``): voxels outside it become 0.
A run without a mask must be skull-stripped: its background is checked, never assumed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold" -> the part before "_desc-..."
# (or before "_bold"), to which "_desc-brain_mask" is appended.
_BIDS_BOLD = re.compile(r"^(?P<entities>.+?)(_desc-[A-Za-z0-9]+)?_bold$")
BIDS_MASK_DESC = "_desc-brain_mask"
# A skull-stripped run has (almost) nothing on the faces of its field of view.
MAX_NONZERO_EDGE_FRACTION = 0.5


def is_mask_file(name: str) -> bool:
    """BIDS masks and segmentations found next to runs are never runs themselves."""
    stem = name.split(".nii")[0]
    return stem.endswith(("_mask", "_dseg", "_probseg", "_boldref"))


def bids_mask_for(bold_path: str | Path) -> Path | None:
    """The ``*_desc-brain_mask.nii[.gz]`` beside a BIDS ``*_bold.nii[.gz]`` run, if it exists."""
    bold_path = Path(bold_path)
    stem = bold_path.name.split(".nii")[0]
    match = _BIDS_BOLD.match(stem)
    if not match:
        return None
    for suffix in (".nii.gz", ".nii"):
        candidate = bold_path.with_name(match.group("entities") + BIDS_MASK_DESC + suffix)
        if candidate.exists():
            return candidate
    return None


# A mask may leave this share of its voxels without signal (edge voxels), and a skull-stripped
# run may hold this share of its signal outside its mask, before the mask is refused as not
# this run's.
MAX_MASK_MISMATCH = 0.05


def load_mask(mask_path: str | Path, bold_img, bold_path: str | Path) -> tuple:
    """(a 3D bool mask on the run's grid, notes). Refused in one line naming the mask file: a
    mask of another grid or affine (no resampling: a shifted or foreign mask would cut the
    brain silently), non-binary values that are not probabilities, an empty mask. A
    probability map is thresholded at 0.5, with a note."""
    from .nifti import load_nifti

    mask_img = load_nifti(mask_path)
    shape = mask_img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"{mask_path}: a brain mask must be 3D, got shape {mask_img.shape}")
    if tuple(shape) != tuple(bold_img.shape[:3]):
        raise ValueError(f"{mask_path}: the mask's grid {tuple(shape)} is not the run's "
                         f"{tuple(bold_img.shape[:3])} ({bold_path}); give the mask made for this run")
    shift = float(np.abs(np.asarray(mask_img.affine) - np.asarray(bold_img.affine)).max())
    if shift > 1e-3:
        raise ValueError(f"{mask_path}: the mask's affine differs from the run's by up to {shift:.3g} "
                         f"(mm or scale) ({bold_path}); give the mask made for this run")
    try:
        values = np.asarray(mask_img.dataobj, dtype=np.float64).reshape(shape)
    except Exception as err:
        raise ValueError(f"{mask_path}: cannot read the mask ({type(err).__name__}: {err})") from err
    notes = []
    if not np.isin(values, (0.0, 1.0)).all():
        if values.min() < 0 or values.max() > 1:
            raise ValueError(f"{mask_path}: not a binary mask (values {values.min():.3g} to "
                             f"{values.max():.3g}); give a 0/1 brain mask")
        notes.append(f"{mask_path}: a probability map (values strictly between 0 and 1), "
                     f"thresholded at 0.5")
        mask = values >= 0.5
    else:
        mask = values > 0
    if not mask.any():
        raise ValueError(f"{mask_path}: the brain mask is empty (given for {bold_path})")
    return mask, notes


def check_mask_fits(mask: np.ndarray, data: np.ndarray, mask_path, bold_path) -> None:
    """Refuse a mask that is not this run's: mask voxels without any signal (a shifted or
    another subject's mask over the zero background), or, on a skull-stripped run, signal
    outside the mask."""
    from .nifti import brain_mask_of

    signal = brain_mask_of(data)  # non-zero in some frame
    empty = float(np.count_nonzero(mask & ~signal)) / max(int(mask.sum()), 1)
    if empty > MAX_MASK_MISMATCH:
        raise ValueError(f"{mask_path}: {100 * empty:.0f}% of the mask's voxels hold no signal in "
                         f"{bold_path}; it is not this run's brain mask")
    if nonzero_edge_fraction(data) <= MAX_NONZERO_EDGE_FRACTION:  # skull-stripped: zero outside
        outside = float(np.count_nonzero(signal & ~mask)) / max(int(signal.sum()), 1)
        if outside > MAX_MASK_MISMATCH:
            raise ValueError(f"{mask_path}: {100 * outside:.0f}% of the signal of {bold_path} lies "
                             f"outside the mask; it is not this run's brain mask")


def nonzero_edge_fraction(data: np.ndarray) -> float:
    """Fraction of the voxels on the six faces of the field of view that are non-zero in the
    first frame."""
    first = data[..., 0] if data.ndim == 4 else data
    faces = [first[0], first[-1], first[:, 0], first[:, -1], first[:, :, 0], first[:, :, -1]]
    total = sum(f.size for f in faces)
    return sum(int(np.count_nonzero(f)) for f in faces) / max(total, 1)


def check_zero_background(data: np.ndarray, path: str | Path) -> None:
    """Refuse a run without a mask whose background is not zero: "brain = non-zero voxels"
    would keep its whole field of view as brain (statistics, placement, token mask all wrong)."""
    fraction = nonzero_edge_fraction(data)
    if fraction > MAX_NONZERO_EDGE_FRACTION:
        raise ValueError(
            f"{path}: the background is not zero ({100 * fraction:.0f}% of the field of view's "
            f"edge voxels are non-zero), so the run is not skull-stripped; give its brain mask "
            f"(--mask FILE, or a BIDS *_desc-brain_mask.nii.gz beside it), or pass "
            f"--allow_nonzero_background if the whole field of view really is brain")
