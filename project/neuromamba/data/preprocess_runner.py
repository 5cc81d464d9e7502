"""NIfTI runs -> HDF5 runs: discover inputs, process each run, in parallel, with a report.

One bad file never stops the others: each run ends as ``done``, ``skipped`` (already complete),
``busy`` (another process is writing it: left to that process) or ``failed`` with one line
saying why; the caller turns any failure into a non-zero exit code. A lock per run
(``<output_dir>/.locks/{subject}/{run}.lock``) lets several processes work on one output folder
together.
"""
from __future__ import annotations

import csv
import functools
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .. import fileio
from . import masks, nifti, placement, store
from .shards import Shard, report_name as shard_report_name

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# subject = first path component (a subject folder) or the file name up to the first "_";
# run = the rest of the name. "sub-01_task-rest_bold.nii.gz" -> ("sub-01", "task-rest_bold");
# "100206/rfMRI_REST1_LR.nii.gz" -> ("100206", "rfMRI_REST1_LR").
DEFAULT_SUBJECT_REGEX = r"^(?P<subject>[^/_]+)[/_](?P<run>.+)$"
LOCK_FOLDER = ".locks"  # in the output folder: one lock file per run being written
PREPROCESS_REPORT = "preprocess_report.csv"  # in the output folder: one row per run


@dataclass(frozen=True)
class RunJob:
    source: str
    subject: str
    run: str
    mask: str | None = None  # brain mask file for this run (BIDS *_desc-brain_mask beside it)


@dataclass(frozen=True)
class PreprocessOptions:
    target_shape: tuple = (96, 96, 96)
    resample_to: float | None = None  # mm; None keeps the input voxel size
    min_frames: int = 20
    compression: str = "none"
    storage_dtype: str = "auto"
    fp16_tolerance: float = store.DEFAULT_FP16_TOLERANCE
    allow_crop_brain: bool = False
    overwrite: bool = False
    placement: str = "world"
    mask: str | None = None  # one brain mask for every run (else per-run BIDS masks)
    allow_nonzero_background: bool = False
    space: str = "MNI152"  # BIDS runs taken: space-<this>* or no space- entity; "all": every one

    def settings(self) -> dict:
        """What decides the output's content: a rerun with other values is refused."""
        return {"target_shape": list(self.target_shape), "resample_to": self.resample_to,
                "placement": self.placement, "storage_dtype": self.storage_dtype,
                "fp16_tolerance": self.fp16_tolerance, "compression": self.compression,
                "allow_crop_brain": self.allow_crop_brain,
                "mask": str(Path(self.mask).resolve()) if self.mask else None,
                "allow_nonzero_background": self.allow_nonzero_background}


@dataclass
class RunResult:
    job: RunJob
    status: str  # done | skipped | failed
    message: str = ""
    path: str = ""
    nbytes: int = 0
    warnings: list = field(default_factory=list)


@dataclass
class Summary:
    results: list = field(default_factory=list)
    shard: "Shard | None" = None  # the array share these results are (None: every run)
    runs_in_input: int = 0  # before the share was taken

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list:
        return [r for r in self.results if r.status == "failed"]

    def line(self, out_dir: str | Path) -> str:
        size = folder_size(out_dir)
        busy = f", busy {self.count('busy')} (written by another process)" if self.count("busy") else ""
        share = (f"shard {self.shard.label} ({len(self.results)} of {self.runs_in_input} runs): "
                 if self.shard else "")
        return (f"{share}done {self.count('done')}, skipped {self.count('skipped')}, failed "
                f"{self.count('failed')}{busy}; {out_dir} holds {size / 2**20:.1f} MiB")


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def safe_name(text: str) -> str:
    """Subject/run ids become folder/file names: keep them portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run0"


BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)_(.+)$")
BIDS_SPACE = re.compile(r"(?:^|_)space-([A-Za-z0-9]+)")
BIDS_SUBJECT_ANYWHERE = re.compile(r"(?:^|/)sub-[A-Za-z0-9]+(?:[/_]|$)")


def job_from_relative_path(rel: str, source: str, subject_regex: str) -> RunJob:
    stem = strip_nifti_suffix(rel.replace(os.sep, "/"))
    bids = BIDS_SUBJECT.match(Path(stem).name)
    if bids and subject_regex == DEFAULT_SUBJECT_REGEX:  # BIDS: the sub- entity names the subject
        return RunJob(source, safe_name(bids.group(1)), safe_name(bids.group(2)))
    match = re.search(subject_regex, stem)
    if match and match.groupdict().get("subject"):
        subject = match.group("subject")
        run = match.groupdict().get("run") or "run0"
    else:  # no match: the whole name is the subject, one run
        subject, run = Path(stem).name, "run0"
    return RunJob(source, safe_name(subject), safe_name(run))


def in_space(name: str, space: str) -> bool:
    """A BIDS run is taken when its space- entity starts with ``space`` (or it has none)."""
    found = BIDS_SPACE.search(strip_nifti_suffix(name))
    return space == "all" or found is None or found.group(1).startswith(space)


def discover_runs(input_path: str | Path, subject_regex: str = DEFAULT_SUBJECT_REGEX,
                  space: str = "MNI152") -> list:
    """A folder (searched recursively for .nii/.nii.gz) or a CSV with columns path[,subject,run].
    In a BIDS tree only the runs in ``space`` are taken; each other one is named on stderr."""
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"--input {input_path}: no such file or folder")
    if input_path.is_file():
        return _runs_from_csv(input_path, subject_regex)
    # Broken or looping symbolic links are runs too: they fail with their reason, never vanish.
    files = [p for p in sorted(input_path.rglob("*"))
             if (p.is_file() or (p.is_symlink() and not p.exists()))
             and p.name.endswith(NIFTI_SUFFIXES) and not masks.is_mask_file(p.name)]
    if any(strip_nifti_suffix(p.name).endswith("_bold") for p in files):
        # A BIDS (derivatives) tree: runs are the *_bold files, the rest are references/maps.
        files = [p for p in files if strip_nifti_suffix(p.name).endswith("_bold")]
        skipped = [p for p in files if not in_space(p.name, space)]
        for p in skipped:
            print(f"SKIPPED {p}: not in space {space} (--space chooses; all takes every run)",
                  file=sys.stderr)
        if skipped:
            print(f"skipped {len(skipped)} run(s) in other spaces than {space}", file=sys.stderr)
        files = [p for p in files if in_space(p.name, space)]
        _check_bids_runs(files, space, input_path)
    jobs = []
    for p in files:
        job = job_from_relative_path(str(p.relative_to(input_path)), str(p), subject_regex)
        mask = masks.bids_mask_for(p)
        jobs.append(RunJob(job.source, job.subject, job.run, str(mask) if mask else None))
    if not jobs:
        raise ValueError(f"--input {input_path}: no .nii or .nii.gz files found")
    _check_unique(jobs)
    return jobs


def _check_bids_runs(files: Sequence[Path], space: str, root: Path) -> None:
    """Every BIDS run names its subject (a sub- entity in its name or a sub- folder above it),
    and one run is taken in one space: the same run in two templates that --space matches
    (MNI152NLin2009cAsym and MNI152NLin6Asym both start with MNI152) would be stored as two
    runs of the subject."""
    for p in files:
        if not BIDS_SUBJECT_ANYWHERE.search(p.relative_to(root).as_posix()):
            raise ValueError(f"{p}: a BIDS run (*_bold) without a sub- entity in its name or "
                             f"folders, so no subject; name it sub-<label>_..._bold, or list the "
                             f"runs in a CSV with path,subject,run columns")
    if space == "all":  # every run asked for, each space its own
        return
    by_run = {}
    for p in files:
        by_run.setdefault((p.parent, BIDS_SPACE.sub("", strip_nifti_suffix(p.name))), []).append(p)
    for same in by_run.values():
        if len(same) > 1:
            spaces = [BIDS_SPACE.search(strip_nifti_suffix(p.name)).group(1) for p in same]
            raise ValueError(f"{same[0]} and {len(same) - 1} more: the same run in {len(same)} spaces "
                             f"matching --space {space} ({', '.join(spaces)}) would be stored as "
                             f"{len(same)} runs of one subject; choose one, e.g. --space {spaces[0]}")


def _runs_from_csv(path: Path, subject_regex: str) -> list:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "path" not in rows[0]:
        raise ValueError(f"--input {path}: a run list needs a 'path' column (and optional "
                         f"'subject', 'run', 'mask' columns)")
    jobs = []
    for row in rows:
        src = Path(row["path"])
        if not src.is_absolute():
            src = path.parent / src
        guess = job_from_relative_path(Path(row["path"]).name, str(src), subject_regex)
        mask = row.get("mask") or None
        if mask and not Path(mask).is_absolute():
            mask = str(path.parent / mask)
        if mask is None:
            found = masks.bids_mask_for(src)
            mask = str(found) if found else None
        jobs.append(RunJob(str(src), safe_name(row.get("subject") or guess.subject),
                           safe_name(row.get("run") or guess.run), mask))
    _check_unique(jobs)
    return jobs


def _check_unique(jobs: Sequence[RunJob]) -> None:
    seen = {}
    for job in jobs:
        key = (job.subject, job.run)
        if key in seen:
            raise ValueError(f"{seen[key]} and {job.source} both map to subject {job.subject!r} "
                             f"run {job.run!r}; adjust --subject_regex or give a run list CSV")
        seen[key] = job.source


# ---------------------------------------------------------------------------------------------
def convert_run(job: RunJob, out_dir: str, overwrite: bool,
                write: Callable[[Path], "str | tuple"], settings: dict | None = None) -> RunResult:
    """The per-run protocol of every converter: skip a complete output made with the same
    ``settings`` (unless ``overwrite``), refuse one made with other settings, else
    ``write(final_path) -> reason`` or ``(reason, warnings)``. Never raises: failures are
    one-line results."""
    final = store.run_path(out_dir, job.subject, job.run)
    try:
        lock = Path(out_dir) / LOCK_FOLDER / job.subject / f"{job.run}.lock"
        with fileio.exclusive_lock(lock) as mine:
            if not mine:
                return RunResult(job, "busy", f"{final}: another process is writing this run; "
                                 f"left to it")
            return _convert_locked(job, final, overwrite, write, settings)
    except Exception as err:  # one clear line per bad file; the others go through
        return RunResult(job, "failed", _one_line(err, job.source))


def _convert_locked(job: RunJob, final: Path, overwrite: bool, write, settings) -> RunResult:
    """convert_run's work, with this run's lock held (so leftover temporaries are stale)."""
    try:
        if not overwrite and final.exists() and store.is_complete(final):
            changed = store.settings_differ(final, settings or {})
            if changed:
                return RunResult(job, "failed", f"{final} was made with other settings "
                                 f"({changed}); pass --overwrite to redo it, or choose another "
                                 f"--output_dir")
            return RunResult(job, "skipped", "already complete", str(final), final.stat().st_size)
        outcome = write(final)
        reason, notes = outcome if isinstance(outcome, tuple) else (outcome, [])
        return RunResult(job, "done", reason, str(final), final.stat().st_size, list(notes))
    except Exception as err:  # one clear line per bad file; the others go through
        return RunResult(job, "failed", _one_line(err, job.source))


def preprocess_one(job: RunJob, out_dir: str, options: PreprocessOptions) -> RunResult:
    """Validate, mask, place, compute stats, write. Never raises: failures are results."""
    return convert_run(job, out_dir, options.overwrite,
                       lambda final: _preprocess_to(job, final, options), options.settings())


def _preprocess_to(job: RunJob, final: Path, options: PreprocessOptions) -> tuple:
    """Write ``job``'s run to ``final``; returns (why its storage dtype was chosen, warnings)."""
    img = nifti.load_nifti(job.source)
    nifti.validate_header(img, job.source, options.min_frames)
    data = nifti.read_nifti_data(img, job.source)
    mask_path = options.mask or job.mask
    mask_notes = []
    if mask_path:
        mask, mask_notes = masks.load_mask(mask_path, img, job.source)
        masks.check_mask_fits(mask, data, mask_path, job.source)
        data *= mask[..., None]
    else:
        if not options.allow_nonzero_background:
            masks.check_zero_background(data, job.source)
        mask = None
    nifti.validate_data(data, job.source)
    if mask is None:
        mask = nifti.brain_mask_of(data)
    placed = placement.place_run(data, mask, np.asarray(img.affine),
                                 target_shape=options.target_shape, placement=options.placement,
                                 resample_to=options.resample_to,
                                 allow_crop_brain=options.allow_crop_brain, path=job.source)
    del data
    record = placed.record
    frames = nifti.crop_pad_frames(placed.data, record)  # (T, D, H, W), raw, background 0
    brain = nifti.apply_crop_pad(placed.mask, record).astype(bool)
    stats = store.compute_stats(frames, frame_axis=0)
    if not stats.std > 1e-9 * max(abs(stats.mean), 1.0):
        raise ValueError(f"{job.source}: every brain voxel has the same value in every frame "
                         f"(std 0): not an fMRI run")
    notes = mask_notes + placed.warnings + _signed_brain_warning(stats, job.source)
    dtype, reason = store.choose_storage_dtype(frames, stats, options.storage_dtype,
                                               options.fp16_tolerance, frame_axis=0)
    store.write_run(final, frames, subject=job.subject, run=job.run, stats=stats,
                    brain_mask=brain, storage_dtype=dtype,
                    dtype_reason=reason, compression=options.compression,
                    crop_pad_json=record.to_json(), voxel_size=placed.voxel_size,
                    source_file=str(Path(job.source).resolve()),
                    extra_attrs={"settings": store.settings_json(options.settings()),
                                 "mask_file": str(Path(mask_path).resolve()) if mask_path else "",
                                 "grid_affine": record.target_affine,
                                 "placement": record.placement})
    return reason, notes


def _signed_brain_warning(stats: store.RunStats, source: str) -> list:
    if stats.min >= 0:
        return []
    return [f"{source}: brain voxels go down to {stats.min:.4g}, below the background's raw value "
            f"0 (signed or demeaned data): under the *_minback scalings the background is then "
            f"not the volume minimum; token selection uses the stored brain mask, so training is "
            f"unaffected, but tools that test values for background are not"]


def _one_line(err: Exception, source: str) -> str:
    text = " ".join(str(err).split())
    return text if source in text else f"{source}: {text}"


class Interrupted(Exception):
    """Ctrl-C: ``summary`` holds the runs that finished; ``remaining`` were not converted."""

    def __init__(self, summary: Summary, remaining: int):
        super().__init__(f"interrupted with {remaining} runs left")
        self.summary, self.remaining = summary, remaining


def _worker_init() -> None:
    """Workers die with their parent (Linux: the kernel sends SIGKILL when it goes, so a killed
    preprocess.py leaves no orphan converting on its own) and leave Ctrl-C to the parent, which
    stops them."""
    import signal

    from neuromamba.processes import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def run_jobs(jobs: Iterable, work: Callable, num_workers: int = 0, desc: str = "runs",
             progress: bool = True) -> Summary:
    """Apply ``work(job) -> RunResult`` to every job, in processes when num_workers > 0.
    Ctrl-C stops at once (workers terminated, queued runs cancelled) and raises
    :class:`Interrupted` with what finished."""
    from tqdm import tqdm

    jobs = list(jobs)
    summary = Summary()
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress)
    pool = None
    try:
        if num_workers and num_workers > 0:
            from concurrent.futures.process import BrokenProcessPool

            pool = ProcessPoolExecutor(max_workers=num_workers, initializer=_worker_init)
            futures = {pool.submit(work, job): job for job in jobs}
            for fut in as_completed(futures):
                try:
                    summary.results.append(fut.result())
                except BrokenProcessPool:  # a worker was killed (out of memory, a crash)
                    summary.results.append(RunResult(
                        futures[fut], "failed", f"{futures[fut].source}: a worker process died "
                        f"while converting it (out of memory, or killed); rerun to retry"))
                bar.update(1)
            pool.shutdown()
        else:
            for job in jobs:
                summary.results.append(work(job))
                bar.update(1)
    except KeyboardInterrupt:
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        summary.results.sort(key=lambda r: (r.job.subject, r.job.run))
        raise Interrupted(summary, len(jobs) - len(summary.results)) from None
    bar.close()
    summary.results.sort(key=lambda r: (r.job.subject, r.job.run))
    return summary


def convert_folder(jobs: Sequence[RunJob], convert_one: Callable, out_dir, options, *,
                   desc: str, report_name: str, num_workers: int = 0,
                   progress: bool = True, shard: Shard | None = None) -> Summary:
    """``convert_one(job, out_dir, options) -> RunResult`` for every job (of ``shard``'s share
    when given), then the report CSV (one per shard: array tasks never share a file).
    ``convert_one`` is a module-level function, so the partial below pickles for the pool."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    total = len(jobs)
    if shard is not None:
        jobs = shard.select(jobs)
        report_name = shard_report_name(report_name, shard)
    work = functools.partial(convert_one, out_dir=str(out_dir), options=options)
    try:
        summary = run_jobs(jobs, work, num_workers, desc, progress)
    except Interrupted as stop:
        stop.summary.shard, stop.summary.runs_in_input = shard, total
        write_report(stop.summary, Path(out_dir) / report_name)
        raise
    summary.shard, summary.runs_in_input = shard, total
    write_report(summary, Path(out_dir) / report_name)
    return summary


def preprocess_folder(input_path, out_dir, options: PreprocessOptions, *, num_workers: int = 0,
                      subject_regex: str = DEFAULT_SUBJECT_REGEX, progress: bool = True,
                      shard: Shard | None = None) -> Summary:
    return convert_folder(discover_runs(input_path, subject_regex, options.space), preprocess_one, out_dir,
                          options, desc="NIfTI -> HDF5", report_name=PREPROCESS_REPORT,
                          num_workers=num_workers, progress=progress, shard=shard)


def write_report(summary: Summary, path: Path) -> None:
    with fileio.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "run", "status", "source", "output", "bytes", "message"])
        for r in summary.results:
            writer.writerow([r.job.subject, r.job.run, r.status, r.job.source, r.path, r.nbytes,
                             r.message])


def folder_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*.h5") if p.is_file())
