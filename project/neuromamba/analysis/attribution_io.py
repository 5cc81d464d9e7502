"""Writing attribution maps: NIfTI in the input's original space, and nilearn's stat-map PNG."""
from __future__ import annotations

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


def attribution_threshold(attribution: np.ndarray, percentile: float = 90.0) -> float:
    """The |value| above which voxels are drawn: a percentile of the non-zero |attribution|."""
    nonzero = np.abs(np.asarray(attribution, dtype=float))
    nonzero = nonzero[nonzero > 0]
    return float(np.percentile(nonzero, percentile)) if nonzero.size else 0.0


def attribution_figure(background: np.ndarray, attribution: np.ndarray, affine: np.ndarray,
                       title: str = "", threshold_percentile: float = 90.0,
                       colorbar_label: str = "integrated gradients (model output units)"):
    """The field's standard look (nilearn's plot_stat_map): orthogonal slices through the peak
    in mm, orientation labels, the attribution over the run's mean image (before input
    scaling, so the anatomy shows), drawn above a stated threshold, with a labelled colourbar.
    Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    background = np.asarray(background, dtype=np.float32)
    attribution = np.asarray(attribution, dtype=np.float32)
    if background.shape != attribution.shape or background.ndim != 3:
        raise ValueError(f"background {background.shape} and attribution {attribution.shape} "
                         "must be equal 3D shapes")
    affine = np.asarray(affine, dtype=float)
    threshold = attribution_threshold(attribution, threshold_percentile)
    peak = slice_indices(attribution)
    cut = (affine @ np.array([*peak, 1.0]))[:3]
    fig = plt.figure(figsize=(11, 4.2))
    subtitle = (f"|IG| > {threshold:.3g} ({threshold_percentile:g}th percentile of the non-zero "
                f"voxels); cut at the peak ({cut[0]:.0f}, {cut[1]:.0f}, {cut[2]:.0f}) mm")
    before = set(fig.axes)
    plotting.plot_stat_map(
        nib.Nifti1Image(attribution, affine), bg_img=nib.Nifti1Image(background, affine),
        threshold=threshold, cut_coords=tuple(float(c) for c in cut), display_mode="ortho",
        colorbar=True, draw_cross=False, annotate=True, black_bg=False, figure=fig,
        title=None, cmap="RdBu_r" if attribution.min() < 0 else "hot", dim=0)
    label_colorbar(fig, before, colorbar_label)
    fig.suptitle(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    return fig


def label_colorbar(fig, axes_before, label: str) -> None:
    """Name what the colour scale measures: nilearn draws its colourbar on an axes of its
    own (the one narrow axes it adds besides the slices), unlabelled."""
    added = [ax for ax in fig.axes if ax not in axes_before]
    bars = [ax for ax in added if ax.get_position().width < 0.1 and ax.get_yticks().size]
    if not bars:
        raise RuntimeError("nilearn drew no colourbar axes to label")
    bar = bars[-1]
    bar.yaxis.set_label_position("left")  # beside nilearn's tick labels, inside the figure
    bar.set_ylabel(label, fontsize=8, labelpad=2)


def plot_attribution(path: str, background: np.ndarray, attribution: np.ndarray, affine: np.ndarray,
                     title: str = "", threshold_percentile: float = 90.0,
                     colorbar_label: str = "integrated gradients (model output units)") -> str:
    """:func:`attribution_figure` written atomically as a PNG."""
    import matplotlib.pyplot as plt

    fig = attribution_figure(background, attribution, affine, title, threshold_percentile,
                             colorbar_label)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
