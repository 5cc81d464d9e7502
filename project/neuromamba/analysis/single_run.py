"""One NIfTI run through the project's own preprocessing, as clips the model can read.

The run goes through exactly the pipeline of ``project/preprocess.py`` (validation, optional
resampling, crop/pad around the brain with a recorded :class:`CropPadRecord`, run statistics)
into an HDF5 file in a temporary folder, and is read back through the training datasets (same
clip windows, same load-time scaling), so a prediction sees what training saw.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

SUBJECT_ID = "input"


@dataclass
class PreparedRun:
    path: str  # HDF5 file
    record: object  # neuromamba.data.nifti.CropPadRecord
    num_frames: int
    source: str
    grid: dict = None  # shape, voxel_size, affine of the model grid (as DataGrid.as_dict)


def _run_name(nifti_path: str) -> str:
    from neuromamba.data.preprocess_runner import safe_name, strip_nifti_suffix

    return safe_name(strip_nifti_suffix(Path(nifti_path).name))


def preprocess_to(nifti_path: str, out_dir: str, spatial_size: Sequence[int], min_frames: int,
                  resample_to: Optional[float] = None, allow_crop_brain: bool = False,
                  mask: Optional[str] = None, placement: str = "world") -> PreparedRun:
    """Preprocess ``nifti_path`` into ``out_dir``; raises ValueError with the reason on failure.
    Its brain mask is ``mask``, else a BIDS ``*_desc-brain_mask`` beside it, as in preprocessing."""
    import h5py
    import numpy as np

    from neuromamba.data.masks import bids_mask_for
    from neuromamba.data.nifti import CropPadRecord
    from neuromamba.data.preprocess_runner import PreprocessOptions, RunJob, preprocess_one

    if not Path(nifti_path).exists():
        raise FileNotFoundError(f"--nifti {nifti_path}: no such file")
    if mask and not Path(mask).is_file():
        raise FileNotFoundError(f"--mask {mask}: no such file")
    options = PreprocessOptions(target_shape=tuple(int(s) for s in spatial_size),
                                resample_to=resample_to, min_frames=int(min_frames),
                                allow_crop_brain=allow_crop_brain, overwrite=True,
                                placement=placement, mask=mask)
    found = bids_mask_for(nifti_path)
    job = RunJob(str(nifti_path), SUBJECT_ID, _run_name(nifti_path), str(found) if found else None)
    result = preprocess_one(job, out_dir, options)
    if result.status != "done":
        raise ValueError(result.message or f"{nifti_path}: preprocessing failed")
    with h5py.File(result.path, "r") as f:
        record = CropPadRecord.from_json(str(f.attrs["crop_pad"]))
        frames = int(f["fmri"].shape[0])
        grid = {"shape": list(f["fmri"].shape[1:]),
                "voxel_size": [float(v) for v in np.ravel(f.attrs["voxel_size"])],
                "affine": ([float(v) for v in np.ravel(f.attrs["grid_affine"])]
                           if record.placement == "world" else [])}
    return PreparedRun(result.path, record, frames, str(nifti_path), grid)


@contextmanager
def prepared_run(nifti_path: str, spatial_size, min_frames: int, workdir: Optional[str] = None,
                 **options) -> Iterator[PreparedRun]:
    """:func:`preprocess_to` in a temporary folder (removed afterwards) or in ``workdir``."""
    if workdir:
        yield preprocess_to(nifti_path, workdir, spatial_size, min_frames, **options)
        return
    with tempfile.TemporaryDirectory(prefix="neuromamba-run-") as tmp:
        yield preprocess_to(nifti_path, tmp, spatial_size, min_frames, **options)


def run_clip_dataset(run: PreparedRun, img_size: Sequence[int], scaling_method: str,
                     stride_within_seq: int = 1, stride_between_seq: float = 1.0,
                     patch_size: Sequence[int] = (6, 6, 6, 2), deliver: str = "model"):
    """The clips of the prepared run, scaled as in training; ``stride_between_seq`` clip
    lengths apart (1: non-overlapping). ``deliver="stored"``: as the training DataLoaders
    deliver them, scaled where the model runs (``datasets.batch_to_model``)."""
    from neuromamba.data.datasets import ClipDataset, ClipSpec, HDF5Reader, RunEntry

    entry = RunEntry(SUBJECT_ID, Path(run.path).stem, run.num_frames, run.path)
    spec = ClipSpec.for_model(img_size, patch_size, stride_within_seq, stride_between_seq, scaling_method)
    dataset = ClipDataset([entry], spec, HDF5Reader(), deliver=deliver)
    if len(dataset) == 0:
        raise ValueError(f"{run.source}: {run.num_frames} frames give no clip of {img_size[3]} frames "
                         f"(stride within clip {stride_within_seq})")
    return dataset
