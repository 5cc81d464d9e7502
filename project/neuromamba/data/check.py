"""Check-and-clean: verify every HDF5 run in a folder; list or remove the bad ones.

A run is good when it opens, is marked complete with this format version, has a 4D ``fmri``
dataset, a matching ``brain_mask``, finite statistics with std > 0, and finite frame values.
Leftover temporary files of killed writers are always reported as bad.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import store



@dataclass(frozen=True)
class CheckResult:
    path: str
    ok: bool
    message: str = ""
    busy: bool = False  # another process holds it open (locked): not checked, never removed
    frames: int = 0  # TRs in a good run


def _is_lock_error(err: Exception) -> bool:
    """HDF5 refuses to open a file another process has open for writing: errno 11 (EAGAIN)
    "unable to lock file". That says nothing about the file's content."""
    return isinstance(err, BlockingIOError) or "unable to lock file" in str(err)


def check_run(path: str | Path, full: bool = True, frames: bool = True) -> CheckResult:
    """``full`` reads every frame for the NaN check; otherwise only the first and last;
    ``frames=False`` reads none (metadata only: what training checks on every file at start,
    in milliseconds per file; a NaN anywhere made by preprocessing already shows in the
    statistics, and a clip with a NaN is refused when it is loaded)."""
    import h5py

    path = Path(path)
    if store.TMP_MARKER in path.name:
        return CheckResult(str(path), False, "temporary file left by an interrupted writer")
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise ValueError("incomplete (no 'complete' attribute)")
            version = int(f.attrs.get("format_version", -1))
            if version != store.FORMAT_VERSION:
                raise ValueError(f"format_version {version}, expected {store.FORMAT_VERSION}: made "
                                 f"by another version of preprocess.py; rerun it with --overwrite")
            if "fmri" not in f or f["fmri"].ndim != 4:
                raise ValueError("no 4D 'fmri' dataset")
            dset = f["fmri"]
            if dset.dtype.kind not in "fiu":  # strings or objects: no clip could be read
                raise ValueError(f"'fmri' holds {dset.dtype} values, not numbers")
            if "brain_mask" not in f or f["brain_mask"].shape != dset.shape[1:]:
                raise ValueError("'brain_mask' missing or of the wrong shape")
            stats = store.read_stats(f.attrs)
            if not all(np.isfinite(v) for v in stats.values()) or stats["std"] <= 0:
                raise ValueError(f"bad statistics {stats}")
            num_frames = int(dset.shape[0])
            to_read = range(dset.shape[0]) if full else sorted({0, dset.shape[0] - 1})
            for t in (to_read if frames else ()):
                if not np.all(np.isfinite(dset[t])):
                    raise ValueError(f"non-finite values in frame {t}")
    except Exception as err:
        if _is_lock_error(err):
            return CheckResult(str(path), False, "busy: another process has it open (locked); "
                               "not checked, not removed; check again when it is done", busy=True)
        return CheckResult(str(path), False, " ".join(f"{type(err).__name__}: {err}".split()))
    return CheckResult(str(path), True, frames=num_frames)


def candidate_files(folder: str | Path) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and
                  (p.suffix == ".h5" or f".h5{store.TMP_MARKER}" in p.name))


class _Check:
    def __init__(self, full: bool):
        self.full = full

    def __call__(self, path):
        return check_run(path, self.full)


def check_folder(folder, *, remove: bool = False, full: bool = True, num_workers: int = 0,
                 progress: bool = True, every: bool = False) -> list:
    """Check every run; with ``remove`` delete the bad ones. Returns the bad results (every
    result with ``every``)."""
    files = candidate_files(folder)
    results = run_jobs_plain(files, _Check(full), num_workers, progress)
    bad = [r for r in results if not r.ok]
    if remove:
        for r in bad:
            if not r.busy:  # a locked file may be perfectly good: never delete it
                Path(r.path).unlink(missing_ok=True)
    return results if every else bad


def run_jobs_plain(items, work, num_workers: int, progress: bool) -> list:
    """run_jobs for results that are not RunResults (no sorting by subject)."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    items = list(items)
    if num_workers and num_workers > 0:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = list(tqdm(pool.map(work, items), total=len(items), desc="check",
                                disable=not progress))
    else:
        results = [work(i) for i in tqdm(items, desc="check", disable=not progress)]
    return results
