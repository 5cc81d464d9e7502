"""The HDF5 run format: one file per run, one TR per chunk, raw values + brain statistics.

Layout of ``{subject}/{run}.h5``::

    /fmri        (T, D, H, W) raw values, chunks (1, D, H, W), dtype float16|int16|float32
    /brain_mask  (D, H, W) uint8: the brain (the mask file's voxels, else those non-zero in any
                 frame), placed like the frames; token selection reads it
    attrs: format_version, subject, run, source_file, mask_file, storage_dtype, dtype_reason,
           compression, stats_valid_voxels, stats_mean, stats_std, stats_min, stats_max,
           voxel_size (mm), grid_affine (4x4 voxel->world of the model grid, LAS),
           crop_pad (JSON of CropPadRecord), settings (JSON of the preprocessing options),
           complete (written last)

Format 2 (this one) places every run on the dataset's world grid; format 1 files (per-run
brain centring, no grid record) are refused by training with a one-line fix.

Files are written under a temporary name in the destination folder and renamed when complete,
so a killed writer never leaves a file that looks finished.
"""
from __future__ import annotations

import json
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Optional

import numpy as np

from .. import fileio

FORMAT_VERSION = 2
COMPRESSIONS = {"none": None, "gzip": "gzip", "lzf": "lzf"}
STORAGE_DTYPES = ("auto", "float16", "int16", "float32")
FP16_MAX = 65504.0
# fp16 is accepted when its worst rounding error is below this fraction of the brain std.
DEFAULT_FP16_TOLERANCE = 1e-3
STAT_KEYS = ("valid_voxels", "mean", "std", "min", "max")
TMP_MARKER = fileio.TMP_MARKER  # leftover temporaries of killed writers


@dataclass(frozen=True)
class RunStats:
    valid_voxels: int
    mean: float
    std: float
    min: float
    max: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in STAT_KEYS}


def compute_stats(data: np.ndarray, *, frame_axis: int = 0, block: int = 8) -> RunStats:
    """Count, mean, std, min, max over non-zero values (brain voxels), float64 sums by blocks.

    Zeros add nothing to the sums, so only the count and min/max need the non-zero mask.
    """
    data = np.moveaxis(data, frame_axis, 0)
    n, total, total_sq = 0, 0.0, 0.0
    lo, hi = np.inf, -np.inf
    for start in range(0, data.shape[0], block):
        part = data[start:start + block]
        nonzero = part != 0
        count = int(np.count_nonzero(nonzero))
        if count:
            wide = part.astype(np.float64)
            n += count
            total += float(wide.sum())
            flat = wide.ravel()
            total_sq += float(np.dot(flat, flat))
            lo = min(lo, float(np.min(part, where=nonzero, initial=np.inf)))
            hi = max(hi, float(np.max(part, where=nonzero, initial=-np.inf)))
    if n == 0:
        raise ValueError("no non-zero (brain) voxels")
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0)
    return RunStats(int(n), float(mean), float(np.sqrt(var)), float(lo), float(hi))


@dataclass(frozen=True)
class VoxelStats:
    """Per-voxel statistics over the whole run (the field's usual basis for functional signals).

    ``mean_image`` (D, H, W) float32: each brain voxel's mean over every frame of the run (0
    outside the brain): the static image. ``fluct_std``: the run's typical fluctuation, the
    root mean over brain voxels of each voxel's temporal variance; dividing by it keeps each
    voxel's fluctuation amplitude relative to the run's fluctuations, not to its static
    contrast."""

    mean_image: np.ndarray
    fluct_std: float
    brain: Optional[np.ndarray] = None  # (D, H, W) bool; default: where mean_image != 0

    @functools.cached_property
    def static_image(self) -> np.ndarray:
        """The static image z-scored over the brain, background 0, (D, H, W): computed once per
        run (the readers cache this object), not once per clip."""
        brain = self.brain if self.brain is not None else self.mean_image != 0
        out = np.zeros_like(self.mean_image, dtype=np.float32)
        if brain.any():
            values = self.mean_image[brain].astype(np.float64)
            out[brain] = ((values - values.mean()) / max(values.std(), 1e-8)).astype(np.float32)
        return out


def compute_voxel_stats(frames_tdhw: np.ndarray, brain_mask: np.ndarray, block: int = 16) -> VoxelStats:
    """:class:`VoxelStats` of a (T, D, H, W) run, float64 sums a block of frames at a time."""
    brain = np.asarray(brain_mask, dtype=bool)
    total = np.zeros(brain.shape, np.float64)
    total_sq = np.zeros(brain.shape, np.float64)
    frames = frames_tdhw.shape[0]
    for start in range(0, frames, block):
        part = np.asarray(frames_tdhw[start:start + block], dtype=np.float64)
        total += part.sum(axis=0)
        total_sq += np.square(part).sum(axis=0)
    mean = total / max(frames, 1)
    var = np.maximum(total_sq / max(frames, 1) - mean * mean, 0.0)
    pooled = float(np.sqrt(var[brain].mean())) if brain.any() else 0.0
    return VoxelStats(np.where(brain, mean, 0.0).astype(np.float32), pooled, brain)


def fp16_max_rounding_error(max_abs: float) -> float:
    """Worst-case float16 rounding error for values up to ``max_abs``: half a unit in the last
    place at the top binade (10 mantissa bits), an upper bound attained by dense data."""
    if max_abs <= 0:
        return 0.0
    exponent = max(np.floor(np.log2(max_abs)), -14)  # below 2^-14: subnormal spacing
    return float(2.0 ** (exponent - 11))


def choose_storage_dtype(data: np.ndarray, stats: RunStats, requested: str = "auto",
                         fp16_tolerance: float = DEFAULT_FP16_TOLERANCE,
                         frame_axis: int = 0) -> tuple:
    """Pick the on-disk dtype; returns (numpy dtype, reason).

    ``auto``: int16 when every value is an integer in int16 range (exact); else float16 when the
    values fit and the worst fp16 rounding error is below ``fp16_tolerance`` x brain std; else
    float32. A requested dtype that would lose information raises.
    """
    if requested not in STORAGE_DTYPES:
        raise ValueError(f"--storage_dtype {requested!r}: choose one of {STORAGE_DTYPES}")
    max_abs = max(abs(stats.min), abs(stats.max))
    is_integer = max_abs <= 32767 and _all_integer(np.moveaxis(data, frame_axis, 0))
    if requested in ("auto", "int16") and is_integer:
        return np.dtype(np.int16), "integer values within int16 range: stored exactly"
    if requested == "int16":
        raise ValueError("--storage_dtype int16: values are not all integers within int16 range")
    if requested in ("auto", "float16"):
        if max_abs > FP16_MAX:
            reason = f"max |value| {max_abs:.6g} exceeds the float16 range"
        else:
            worst = fp16_max_rounding_error(max_abs)
            rel = worst / max(stats.std, 1e-12)
            if rel <= fp16_tolerance:
                return np.dtype(np.float16), (f"float16 worst rounding error {worst:.3g} = "
                                              f"{rel:.2e} x brain std (<= {fp16_tolerance:g})")
            reason = (f"float16 worst rounding error {worst:.3g} = {rel:.2e} x brain std "
                      f"(> {fp16_tolerance:g})")
        if requested == "float16":
            raise ValueError(f"--storage_dtype float16 would lose precision: {reason}; raise "
                             f"--fp16_tolerance to accept it")
        return np.dtype(np.float32), f"float32: {reason}"
    return np.dtype(np.float32), "float32 requested"


def _all_integer(frames: np.ndarray, block: int = 8) -> bool:
    """Frames first; stops at the first block with a fraction (float data fails at once)."""
    for start in range(0, frames.shape[0], block):
        part = frames[start:start + block]
        if not np.array_equal(part, np.round(part)):
            return False
    return True


def run_path(root: str | Path, subject: str, run: str) -> Path:
    return Path(root) / str(subject) / f"{run}.h5"


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is a finished file of this format version."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False)) and \
                int(f.attrs.get("format_version", -1)) == FORMAT_VERSION
    except Exception:  # unreadable/partial file: not complete, will be redone
        return False


# Headroom beyond the run's own bytes: HDF5 metadata, attributes, the file system's blocks.
FREE_SPACE_MARGIN = 16 * 2**20


def require_free_space(folder: str | Path, nbytes: int) -> None:
    """Refuse to start a write that cannot fit: HDF5 itself can crash the process when the disk
    fills up mid-write, so the check comes first (sized from the uncompressed run)."""
    import shutil

    free = shutil.disk_usage(folder).free
    needed = int(nbytes) + FREE_SPACE_MARGIN
    if free < needed:
        raise OSError(28, f"{folder}: disk full: this run needs {needed / 2**20:.0f} MiB, "
                          f"{free / 2**20:.0f} MiB are free")


def settings_json(settings: Mapping[str, object]) -> str:
    return json.dumps(dict(settings), sort_keys=True)


def settings_differ(path: str | Path, settings: Mapping[str, object]) -> str:
    """'' when the complete file at ``path`` was written with ``settings``; else which differ,
    as ``--name old -> new`` phrases."""
    import h5py

    with h5py.File(path, "r") as f:
        stored = json.loads(str(f.attrs.get("settings", "{}") or "{}"))
    changed = [f"--{key} {stored.get(key)!r} -> {value!r}"
               for key, value in sorted(settings.items()) if stored.get(key) != value]
    return "; ".join(changed)


def remove_stale_temporaries(final_path: str | Path) -> None:
    """Delete temporary files a killed writer left for this run."""
    final_path = Path(final_path)
    if final_path.parent.exists():
        for tmp in final_path.parent.glob(final_path.name + TMP_MARKER + "*"):
            tmp.unlink(missing_ok=True)


def write_run(path: str | Path, frames_tdhw: np.ndarray, *, subject: str, run: str,
              stats: RunStats, brain_mask: np.ndarray, storage_dtype: np.dtype,
              dtype_reason: str = "", compression: str = "none", crop_pad_json: str = "",
              voxel_size: Sequence[float] = (), source_file: str = "",
              extra_attrs: Mapping[str, object] | None = None) -> Path:
    """Write one run atomically. ``frames_tdhw`` is (T, D, H, W) raw values."""
    import h5py

    if compression not in COMPRESSIONS:
        raise ValueError(f"--compression {compression!r}: choose one of {sorted(COMPRESSIONS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    T, D, H, W = frames_tdhw.shape
    require_free_space(path.parent, T * D * H * W * np.dtype(storage_dtype).itemsize + D * H * W)
    with fileio.atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            kw = {"compression": COMPRESSIONS[compression]} if COMPRESSIONS[compression] else {}
            dset = f.create_dataset("fmri", shape=(T, D, H, W), dtype=storage_dtype,
                                    chunks=(1, D, H, W), track_times=False, **kw)
            for t in range(T):  # frame by frame: bounded memory for the dtype conversion
                dset[t] = frames_tdhw[t].astype(storage_dtype)
            f.create_dataset("brain_mask", data=brain_mask.astype(np.uint8), track_times=False)
            voxel = compute_voxel_stats(frames_tdhw, brain_mask)  # for the voxel_* scalings
            f.create_dataset("voxel_mean", data=voxel.mean_image, track_times=False)
            attrs = {
                "format_version": FORMAT_VERSION, "subject": str(subject), "run": str(run),
                "source_file": str(source_file), "storage_dtype": np.dtype(storage_dtype).name,
                "dtype_reason": dtype_reason, "compression": compression,
                "crop_pad": crop_pad_json,
                "voxel_size": np.asarray(voxel_size, dtype=np.float64),
            }
            attrs.update({f"stats_{k}": v for k, v in stats.as_dict().items()})
            attrs["stats_fluct_std"] = voxel.fluct_std
            attrs.update(extra_attrs or {})
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["complete"] = True  # last: a file without it is partial
    return path


def read_voxel_stats(f, block: int = 16, brain: Optional[np.ndarray] = None) -> VoxelStats:
    """The run's :class:`VoxelStats` from an open HDF5 run: stored by ``write_run``; files
    written before they existed get them computed from all their frames (one pass). ``brain``:
    the run's mask when the caller holds it already."""
    if brain is None and "brain_mask" in f:
        brain = np.asarray(f["brain_mask"]).astype(bool)
    if "voxel_mean" in f and "stats_fluct_std" in f.attrs:
        return VoxelStats(np.asarray(f["voxel_mean"], dtype=np.float32), float(f.attrs["stats_fluct_std"]),
                          brain)
    dset = f["fmri"]
    if brain is None:
        brain = np.zeros(dset.shape[1:], bool)
        for start in range(0, dset.shape[0], block):
            brain |= (read_frames(dset, slice(start, min(start + block, dset.shape[0]))) != 0).any(0)

    class _Frames:  # a (T, D, H, W) view that reads blocks on demand
        shape = dset.shape

        def __getitem__(self, sel):
            return read_frames(dset, slice(sel.start, min(sel.stop, dset.shape[0])))

    return compute_voxel_stats(_Frames(), brain, block)


def read_stats(attrs) -> dict:
    missing = [k for k in STAT_KEYS if f"stats_{k}" not in attrs]
    if missing:
        raise ValueError(f"statistics missing: {missing}")
    return {k: float(attrs[f"stats_{k}"]) for k in STAT_KEYS}


def read_frames(dset, indices: Sequence[int] | slice, out: np.ndarray | None = None) -> np.ndarray:
    """Read frames of a (T, D, H, W) dataset straight into a preallocated array.

    ``indices`` is a slice (contiguous or strided) or an evenly spaced index list; only those
    chunks are read. Uncompressed one-TR chunks are copied raw into ``out`` (H5Dread_chunk: no
    selection or conversion machinery, ~1.4x faster); otherwise ``read_direct``.
    """
    sel = _as_slice(indices)
    frames = range(*sel.indices(dset.shape[0]))
    if out is None:
        out = np.empty((len(frames),) + tuple(dset.shape[1:]), dtype=dset.dtype)
    if out.dtype != dset.dtype:
        out[...] = dset[sel]
    elif _raw_chunks_readable(dset) and out.flags.c_contiguous:
        did, tail = dset.id, (0,) * (dset.ndim - 1)
        try:
            for k, t in enumerate(frames):
                did.read_direct_chunk((t,) + tail, out=out[k].reshape(-1).view(np.uint8))
        except Exception:  # e.g. a never-written chunk: let HDF5 fill it the normal way
            dset.read_direct(out, source_sel=np.s_[sel])
    else:
        dset.read_direct(out, source_sel=np.s_[sel])
    return out


def _raw_chunks_readable(dset) -> bool:
    """Chunks hold exactly one frame's bytes in native order, unfiltered."""
    return (dset.chunks == (1,) + tuple(dset.shape[1:]) and dset.compression is None
            and not dset.shuffle and not dset.fletcher32 and dset.scaleoffset is None
            and dset.dtype.isnative and hasattr(dset.id, "read_direct_chunk"))


def _as_slice(indices) -> slice:
    if isinstance(indices, slice):
        return indices
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        raise ValueError("no frames requested")
    step = int(idx[1] - idx[0]) if idx.size > 1 else 1
    if step <= 0 or not np.array_equal(idx, idx[0] + step * np.arange(idx.size)):
        raise ValueError("frame indices must be evenly spaced and increasing")
    return slice(int(idx[0]), int(idx[-1]) + 1, step)
