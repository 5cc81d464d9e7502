"""Convert the legacy per-frame layout (SwiFT / NeuroMamba / NeuroSTORM) to HDF5 runs.

Legacy layout: ``img/{subject}/frame_{i}.pt`` (one (X, Y, Z, 1) fp16 tensor per TR, i from 0,
no zero padding) plus ``img/{subject}/global_stats.pt`` (``valid_voxels``, ``global_mean``,
``global_std``, ``global_max``, over non-zero voxels). The frames carry no affine: it comes from
``--reference_nifti`` (a NIfTI on the same grid), or is FSL's MNI152 2 mm affine when the frames
are 91x109x91. They are then placed on the world grid exactly like ``preprocess.py nifti`` runs
(fp16 frames on an integer offset stay fp16, exactly); the statistics are taken from
``global_stats.pt`` (the minimum, which it lacks, is computed from the frames).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import nifti, placement, store
from .preprocess_runner import RunJob, RunResult, convert_folder, convert_run, safe_name

FRAME_PATTERN = re.compile(r"^frame_(\d+)\.pt$")
LEGACY_STATS_KEYS = {"valid_voxels": "valid_voxels", "mean": "global_mean",
                     "std": "global_std", "max": "global_max"}
# The whole folder name is the subject; give a regex with (?P<subject>...)(?P<run>...) groups
# when folders are per run (e.g. "100206_REST1_LR").
DEFAULT_LEGACY_REGEX = r"^(?P<subject>.+)$"
LEGACY_REPORT = "legacy_report.csv"  # in the output folder: one row per subject
# FSL's MNI152 2 mm grid (HCP, UK Biobank, ABCD), stored LAS: the grid legacy frames usually have.
FSL_MNI152_2MM = ((91, 109, 91), ((-2.0, 0.0, 0.0, 90.0), (0.0, 2.0, 0.0, -126.0),
                                  (0.0, 0.0, 2.0, -72.0), (0.0, 0.0, 0.0, 1.0)))


def legacy_root(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--input {path}: no such folder")
    return path / "img" if (path / "img").is_dir() else path


def discover_legacy_subjects(path: str | Path, subject_regex: str = DEFAULT_LEGACY_REGEX) -> list:
    root = legacy_root(path)
    jobs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        m = re.search(subject_regex, folder.name)
        subject = m.group("subject") if m and m.groupdict().get("subject") else folder.name
        run = (m.groupdict().get("run") if m else None) or "run0"
        jobs.append(RunJob(str(folder), safe_name(subject), safe_name(run)))
    if not jobs:
        raise ValueError(f"--input {root}: no subject folders with frame_*.pt files")
    return jobs


def _frame_files(folder: Path) -> list:
    numbered = {}
    for p in folder.iterdir():
        m = FRAME_PATTERN.match(p.name)
        if m:
            numbered[int(m.group(1))] = p
    if not numbered:
        raise ValueError(f"{folder}: no frame_<i>.pt files")
    missing = sorted(set(range(max(numbered) + 1)) - set(numbered))
    if missing:
        raise ValueError(f"{folder}: frames {missing[:5]} missing (frame_0 .. frame_{max(numbered)})")
    return [numbered[i] for i in range(len(numbered))]


def _load_tensor(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot load ({type(err).__name__}: {err})") from err


def _legacy_stats(folder: Path, frames: np.ndarray) -> store.RunStats:
    computed = store.compute_stats(frames, frame_axis=0)
    stats_file = folder / "global_stats.pt"
    if not stats_file.exists():
        return computed
    raw = _load_tensor(stats_file)
    if not isinstance(raw, dict):
        raise ValueError(f"{stats_file}: expected a dict of statistics")
    values = computed.as_dict()
    for key, legacy_key in LEGACY_STATS_KEYS.items():
        if legacy_key in raw:
            values[key] = float(np.asarray(raw[legacy_key]).item())
    values["valid_voxels"] = int(values["valid_voxels"])
    return store.RunStats(**values)


@dataclass(frozen=True)
class LegacyOptions:
    min_frames: int = 20
    compression: str = "none"
    overwrite: bool = False
    target_shape: tuple = (96, 96, 96)
    placement: str = "world"
    allow_crop_brain: bool = False
    reference_nifti: str | None = None

    def settings(self) -> dict:
        return {"target_shape": list(self.target_shape), "placement": self.placement,
                "compression": self.compression, "allow_crop_brain": self.allow_crop_brain,
                "reference_nifti": (str(Path(self.reference_nifti).resolve())
                                    if self.reference_nifti else None)}


def convert_one(job: RunJob, out_dir: str, options: LegacyOptions) -> RunResult:
    """Convert one legacy subject folder. Never raises: failures are results."""
    return convert_run(job, out_dir, options.overwrite,
                       lambda final: _convert_to(job, final, options), options.settings())


def legacy_affine(spatial: tuple, options: LegacyOptions, folder: Path) -> np.ndarray:
    """The frames' voxel->world affine: the reference NIfTI's, or FSL MNI152 2 mm by shape."""
    if options.reference_nifti:
        ref = nifti.load_nifti(options.reference_nifti)
        if tuple(ref.shape[:3]) != tuple(spatial):
            raise ValueError(f"{folder}: frames are {tuple(spatial)} but --reference_nifti "
                             f"{options.reference_nifti} is {tuple(ref.shape[:3])}")
        return np.asarray(ref.affine, dtype=float)
    if tuple(spatial) == FSL_MNI152_2MM[0]:
        return np.asarray(FSL_MNI152_2MM[1])
    raise ValueError(f"{folder}: frames are {tuple(spatial)}, not FSL's MNI152 2 mm grid "
                     f"{FSL_MNI152_2MM[0]}; pass --reference_nifti FILE (a NIfTI on the frames' "
                     f"grid) so they can be placed on the world grid")


def _convert_to(job: RunJob, final: Path, options: LegacyOptions) -> str:
    """Write ``job``'s frames to ``final``; returns why its storage dtype was chosen."""
    folder = Path(job.source)
    files = _frame_files(folder)
    if len(files) < options.min_frames:
        raise ValueError(f"{folder}: {len(files)} frames, fewer than --min_frames "
                         f"{options.min_frames}")
    first = np.asarray(_load_tensor(files[0]))
    spatial = first.shape[:3]
    frames = np.empty((len(files),) + spatial, dtype=first.dtype)
    for t, path in enumerate(files):
        frame = np.asarray(_load_tensor(path))
        frame = frame.reshape(frame.shape[:3]) if frame.ndim == 4 and frame.shape[3] == 1 \
            else frame
        if frame.shape != spatial:
            raise ValueError(f"{path}: frame shape {frame.shape} != {spatial} of frame_0")
        frames[t] = frame
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{folder}: non-finite values (NaN/inf) in the frames")
    affine = legacy_affine(spatial, options, folder)
    mask = nifti.brain_mask_of(np.moveaxis(frames, 0, -1))
    placed = placement.place_run(np.moveaxis(frames, 0, -1), mask, affine,
                                 target_shape=options.target_shape, placement=options.placement,
                                 allow_crop_brain=options.allow_crop_brain, path=str(folder))
    record = placed.record
    stored_dtype = frames.dtype if not record.resampled else np.dtype(np.float32)
    frames = nifti.crop_pad_frames(placed.data, record, dtype=stored_dtype)
    brain = nifti.apply_crop_pad(placed.mask, record).astype(bool)
    stats = _legacy_stats(folder, frames)
    if frames.dtype == np.float16:
        dtype, reason = np.dtype(np.float16), "legacy frames were float16: kept exactly"
    else:
        dtype, reason = store.choose_storage_dtype(frames, stats)
    store.write_run(final, frames, subject=job.subject, run=job.run, stats=stats,
                    brain_mask=brain, storage_dtype=dtype, dtype_reason=reason,
                    compression=options.compression, crop_pad_json=record.to_json(),
                    voxel_size=placed.voxel_size, source_file=str(folder.resolve()),
                    extra_attrs={"legacy_layout": True, "grid_affine": record.target_affine,
                                 "placement": record.placement,
                                 "settings": store.settings_json(options.settings())})
    return reason, placed.warnings


def convert_legacy_folder(input_path, out_dir, options: LegacyOptions, *, num_workers: int = 0,
                          subject_regex: str = DEFAULT_LEGACY_REGEX, progress: bool = True,
                          shard=None):
    return convert_folder(discover_legacy_subjects(input_path, subject_regex), convert_one,
                          out_dir, options, desc="legacy -> HDF5", report_name=LEGACY_REPORT,
                          num_workers=num_workers, progress=progress, shard=shard)
