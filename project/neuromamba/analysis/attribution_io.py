"""Writing attribution maps: NIfTI in the input's original space, and an orthogonal-slice PNG."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..fileio import atomic_path


def to_input_space(volume: np.ndarray, record, fill: float = 0.0) -> np.ndarray:
    """Model grid -> the input file's own grid with the preprocessing's crop/pad record: exact
    (orientation and crop/pad undone) unless the run was resampled, then nilearn resamples back
    (``record`` None: the volume stays on the model grid)."""
    if record is None:
        return np.asarray(volume)
    from neuromamba.data.nifti import to_source_array, to_source_space

    if record.resampled:
        return np.asarray(to_source_space(np.asarray(volume), record, fill=fill).dataobj)
    return to_source_array(np.asarray(volume), record, fill=fill)


def input_affine(record) -> np.ndarray:
    """The input file's affine (identity, i.e. voxel units, without a record)."""
    return np.eye(4) if record is None else np.asarray(record.source_affine, dtype=float)


def write_nifti(path: str, volume: np.ndarray, affine: np.ndarray) -> str:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path, keep_suffix=True) as tmp:  # nibabel picks the format from it
        nib.save(img, tmp)
    return path


def slice_indices(attribution: np.ndarray) -> tuple:
    """Slices through the attribution's peak (largest |value|)."""
    return tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(attribution)), attribution.shape))


def plot_orthogonal_slices(path: str, background: np.ndarray, attribution: np.ndarray,
                           title: str = "", cut: Optional[Sequence[int]] = None,
                           threshold_percentile: float = 90.0) -> str:
    """Sagittal, coronal and axial slices of ``background`` (the mean input volume) with the
    attribution overlaid where ``|attribution|`` exceeds its ``threshold_percentile``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    background = np.asarray(background, dtype=float)
    attribution = np.asarray(attribution, dtype=float)
    if background.shape != attribution.shape or background.ndim != 3:
        raise ValueError(f"background {background.shape} and attribution {attribution.shape} "
                         "must be equal 3D shapes")
    cut = slice_indices(attribution) if cut is None else tuple(int(c) for c in cut)
    nonzero = np.abs(attribution[attribution != 0])
    threshold = np.percentile(nonzero, threshold_percentile) if nonzero.size else 0.0
    overlay = np.ma.masked_where(np.abs(attribution) <= threshold, attribution)
    limit = float(np.abs(attribution).max()) or 1.0
    cmap = "RdBu_r" if attribution.min() < 0 else "hot"
    vmin = -limit if attribution.min() < 0 else 0.0

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    views = [("sagittal x=%d" % cut[0], np.s_[cut[0], :, :]),
             ("coronal y=%d" % cut[1], np.s_[:, cut[1], :]),
             ("axial z=%d" % cut[2], np.s_[:, :, cut[2]])]
    image = None
    for ax, (name, index) in zip(axes, views):
        ax.imshow(background[index].T, origin="lower", cmap="gray")
        image = ax.imshow(overlay[index].T, origin="lower", cmap=cmap, vmin=vmin, vmax=limit, alpha=0.85)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="attribution")
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
