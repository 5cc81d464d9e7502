"""Preprocessing commands (see ADDING_YOUR_DATASET.md).

  python project/preprocess.py nifti  --input RUNS --output_dir HDF5   # NIfTI -> HDF5 runs
  python project/preprocess.py legacy --input OLD  --output_dir HDF5   # img/{subject}/frame_i.pt
  python project/preprocess.py check  HDF5 [--remove]                  # verify / clean a folder
  python project/preprocess.py dummy  --output_dir HDF5                # demo runs + labels.csv
  python project/preprocess.py nifti  --input RUNS --output_dir HDF5 --shard 3/10  # a tenth

A job array splits nifti/legacy over many jobs: each task converts a disjoint share (--shard I/N,
or SLURM_ARRAY_TASK_ID/COUNT under sbatch --array), N shares write exactly what one process
writes, and `check` then summarises the whole folder (see sample_scripts/preprocessing/).

Exit code: 0 when every run succeeded (or was already done), 1 when any failed, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromamba.flag_help import CommandParser, fill_missing_help, prog_for

from neuromamba.data import store
from neuromamba.data.legacy import DEFAULT_LEGACY_REGEX
from neuromamba.data.placement import PLACEMENTS
from neuromamba.data.preprocess_runner import DEFAULT_SUBJECT_REGEX


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num_workers", type=int, default=0,
                   help="processes working on runs in parallel (0: this process)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _array_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="convert only share I of N (1 <= I <= N) of the runs, for a job array; "
                        "the N shares are disjoint and together are every run. Default under "
                        "SLURM: the array task's share (SLURM_ARRAY_TASK_ID/COUNT); else all")
    p.add_argument("--dry_run", action="store_true",
                   help="list the runs this command (this shard) would convert; write nothing")


def _grid_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target_shape", type=int, nargs=3, default=[96, 96, 96], metavar=("D", "H", "W"),
                   help="model grid size in voxels (must equal --img_size's first three values "
                        "in training)")
    p.add_argument("--placement", choices=PLACEMENTS, default="world",
                   help="world: every run on the dataset's fixed world grid (LAS, the MNI152 "
                        "brain centred; the same MNI voxel is the same token for every "
                        "subject); brain_centre: centre each run's own brain (only for data "
                        "not in a standard space)")
    p.add_argument("--allow_crop_brain", action="store_true",
                   help="crop brain voxels that fall outside --target_shape instead of failing")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog_for("preprocess.py", "preprocess"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("nifti", help="preprocessed 4D NIfTI runs -> per-TR HDF5 runs")
    p.add_argument("--input", required=True,
                   help="folder searched recursively for .nii/.nii.gz, or a CSV with columns "
                        "path[,subject,run]")
    p.add_argument("--output_dir", required=True, help="writes {subject}/{run}.h5 here")
    _grid_flags(p)
    p.add_argument("--resample_to", type=float, default=None, metavar="MM",
                   help="voxel size of the model grid in mm (e.g. 2.0); runs on another voxel "
                        "size are resampled with nilearn (default: the runs' own isotropic size)")
    p.add_argument("--mask", default=None, metavar="FILE",
                   help="brain mask NIfTI applied to every run (default: each run's BIDS "
                        "*_desc-brain_mask.nii[.gz] beside it, if any; without a mask a run "
                        "must be skull-stripped to exact zeros)")
    p.add_argument("--allow_nonzero_background", action="store_true",
                   help="accept a run without a mask whose background is not zero (its whole "
                        "field of view then counts as brain)")
    p.add_argument("--min_frames", type=int, default=20,
                   help="runs with fewer frames fail (use at least the clip length T)")
    p.add_argument("--compression", choices=sorted(store.COMPRESSIONS), default="none")
    p.add_argument("--storage_dtype", choices=store.STORAGE_DTYPES, default="auto")
    p.add_argument("--fp16_tolerance", type=float, default=store.DEFAULT_FP16_TOLERANCE,
                   help="auto picks float16 when its worst rounding error <= this x brain std")
    p.add_argument("--space", default="MNI152",
                   help="BIDS trees: take the runs whose space- entity starts with this (and runs "
                        "without one); 'all' takes every run. Others are skipped with one line each")
    p.add_argument("--subject_regex", default=DEFAULT_SUBJECT_REGEX,
                   help="regex with (?P<subject>) and (?P<run>) groups, applied to the path "
                        "relative to --input without the .nii(.gz) suffix")
    p.add_argument("--overwrite", action="store_true", help="redo runs that are already complete")
    _array_flags(p)
    _common(p)

    p = sub.add_parser("legacy", help="img/{subject}/frame_{i}.pt + global_stats.pt -> HDF5")
    p.add_argument("--input", required=True, help="the legacy folder (holding img/ or the "
                                                  "subject folders)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--min_frames", type=int, default=20)
    p.add_argument("--compression", choices=sorted(store.COMPRESSIONS), default="none")
    _grid_flags(p)
    p.add_argument("--reference_nifti", default=None, metavar="FILE",
                   help="a NIfTI on the legacy frames' grid (one of the source runs, or the "
                        "template they were registered to) whose affine places them on the "
                        "world grid; not needed for FSL's MNI152 2 mm grid (91x109x91)")
    p.add_argument("--subject_regex", default=DEFAULT_LEGACY_REGEX,
                   help="regex with (?P<subject>) and optional (?P<run>) groups, applied to "
                        "each folder name")
    p.add_argument("--overwrite", action="store_true")
    _array_flags(p)
    _common(p)

    p = sub.add_parser("check", aliases=["check_and_clean"],
                       help="verify a folder of HDF5 runs; list or remove bad files")
    p.add_argument("folder", help="folder of HDF5 runs written by preprocess.py")
    p.add_argument("--remove", action="store_true", help="delete the bad files")
    p.add_argument("--quick", action="store_true",
                   help="check only the first and last frame for NaNs (not every frame)")
    _common(p)

    p = sub.add_parser("dummy", help="write the synthetic Dummy data as HDF5 runs + labels.csv "
                                     "(to try the file-based path without real data)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_subjects", type=int, default=40, help="synthetic subjects")
    p.add_argument("--num_runs", type=int, default=1, help="runs per subject")
    p.add_argument("--num_frames", type=int, default=40, help="frames (TRs) per run")
    p.add_argument("--img_size", type=int, nargs=3, default=[96, 96, 96], metavar=("D", "H", "W"),
                   help="grid size in voxels (2 mm voxels, on the world grid)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--compression", choices=sorted(store.COMPRESSIONS), default="none")
    return fill_missing_help(parser)


# fMRI voxel sizes that make sense: outside, --target_shape would cover a few mm of brain (0.1
# mm) or a voxel would hold several structures (16 mm).
RESAMPLE_RANGE_MM = (0.5, 8.0)


def _check_values(args) -> None:
    """Flag values that cannot work: one line before anything is read or written."""
    import math
    import re

    if getattr(args, "subject_regex", None) is not None:
        try:
            re.compile(args.subject_regex)
        except re.error as err:
            raise ValueError(f"--subject_regex {args.subject_regex!r} is not a valid regular "
                             f"expression ({err})") from None
    resample = getattr(args, "resample_to", None)
    if resample is not None and not (math.isfinite(resample) and RESAMPLE_RANGE_MM[0] <= resample <= RESAMPLE_RANGE_MM[1]):
        raise ValueError(f"--resample_to {resample}: a voxel size in mm between {RESAMPLE_RANGE_MM[0]:g} "
                         f"and {RESAMPLE_RANGE_MM[1]:g} (fMRI is acquired at 1.5-4 mm; a tiny voxel "
                         f"would make a cube of a few mm)")
    for flag in ("target_shape", "img_size"):
        value = getattr(args, flag, None)
        if value is not None and min(value) < 1:
            raise ValueError(f"--{flag} must be 3 positive sizes, got {value}")
    for flag in ("min_frames", "num_subjects", "num_runs", "num_frames"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be >= 1, got {value}")
    if getattr(args, "num_workers", 0) < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")


def _convert(args, convert_folder, options, discover) -> int:
    """Run a folder converter with the shared flags (on this shard's share of the runs); print
    failures and the summary line. ``discover()`` lists the runs, for --dry_run."""
    import os

    from neuromamba.data.preprocess_runner import Interrupted
    from neuromamba.data.shards import resolve_shard

    shard = resolve_shard(args.shard, os.environ)
    if args.dry_run:
        return _dry_run(args, discover(), shard)
    if shard is not None:
        print(f"preprocess.py {args.command}: shard {shard.label} (from {shard.source})",
              file=sys.stderr)
    try:
        summary = convert_folder(args.input, args.output_dir, options, num_workers=args.num_workers,
                                 subject_regex=args.subject_regex, progress=not args.no_progress,
                                 shard=shard)
    except Interrupted as stop:
        print(f"preprocess.py {args.command}: interrupted: {stop.summary.line(args.output_dir)}; "
              f"{stop.remaining} runs not converted. Rerun the same command to resume (finished "
              f"runs are skipped, partial ones redone)", file=sys.stderr)
        return 130
    for r in summary.results:
        for note in r.warnings:
            print(f"WARNING {note}", file=sys.stderr)
    for r in summary.failed:
        print(f"FAILED {r.message}", file=sys.stderr)
    print(summary.line(args.output_dir))
    return 1 if summary.failed else 0


def _dry_run(args, jobs, shard) -> int:
    mine = shard.select(jobs) if shard else list(jobs)
    share = f"shard {shard.label} (from {shard.source}): " if shard else ""
    for job in mine:
        print(f"  {job.subject}/{job.run}  <- {job.source}")
    print(f"preprocess.py {args.command}: dry run: {share}would convert {len(mine)} of "
          f"{len(jobs)} runs into {args.output_dir}; nothing converted or written")
    return 0


def _check(args) -> int:
    """Verify every file, then summarise the folder (and its job array's reports)."""
    from neuromamba.data.check import check_folder
    from neuromamba.data.folder_summary import array_reports, content_line, good_runs

    results = check_folder(args.folder, remove=args.remove, full=not args.quick,
                           num_workers=args.num_workers, progress=not args.no_progress, every=True)
    bad = [r for r in results if not r.ok]
    busy = [r for r in bad if r.busy]
    broken = [r for r in bad if not r.busy]
    for r in busy:
        print(f"BUSY {r.path}: {r.message}", file=sys.stderr)
    for r in broken:
        print(f"{'REMOVED' if args.remove else 'BAD'} {r.path}: {r.message}", file=sys.stderr)
    arrays = array_reports(args.folder, good_runs(args.folder, results))
    for array in arrays:
        for subject, run, message in array.failed:
            print(f"FAILED {subject}/{run}: {message}", file=sys.stderr)
    total = len(results)
    print(f"checked {total} files: {total - len(bad)} good, {len(broken)} bad"
          + (" (removed)" if args.remove and broken else "")
          + (f", {len(busy)} busy (in use, not checked)" if busy else "")
          + f"; {content_line(args.folder, results)}")
    for array in arrays:
        print(array.line())
    incomplete = any(a.missing or a.failed for a in arrays)
    return 1 if busy or incomplete or (broken and not args.remove) else 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_values(args)
        if args.command == "nifti":
            from neuromamba.data.preprocess_runner import (PreprocessOptions, discover_runs,
                                                           preprocess_folder)

            if args.mask and not Path(args.mask).is_file():
                raise FileNotFoundError(f"--mask {args.mask}: no such file")

            options = PreprocessOptions(
                target_shape=tuple(args.target_shape), resample_to=args.resample_to,
                min_frames=args.min_frames, compression=args.compression,
                storage_dtype=args.storage_dtype, fp16_tolerance=args.fp16_tolerance,
                allow_crop_brain=args.allow_crop_brain, overwrite=args.overwrite,
                placement=args.placement, mask=args.mask,
                allow_nonzero_background=args.allow_nonzero_background, space=args.space)
            return _convert(args, preprocess_folder, options, lambda: discover_runs(
                args.input, args.subject_regex, args.space))
        if args.command == "legacy":
            from neuromamba.data.legacy import (LegacyOptions, convert_legacy_folder,
                                                discover_legacy_subjects)

            options = LegacyOptions(min_frames=args.min_frames, compression=args.compression,
                                    overwrite=args.overwrite,
                                    target_shape=tuple(args.target_shape),
                                    placement=args.placement,
                                    allow_crop_brain=args.allow_crop_brain,
                                    reference_nifti=args.reference_nifti)
            return _convert(args, convert_legacy_folder, options, lambda: discover_legacy_subjects(
                args.input, args.subject_regex))
        if args.command == "dummy":
            from neuromamba.data.dummy import DummySpec, write_dummy_runs

            spec = DummySpec(num_subjects=args.num_subjects, img_size=tuple(args.img_size),
                             num_frames=args.num_frames, num_runs=args.num_runs, seed=args.seed)
            paths = write_dummy_runs(args.output_dir, spec, compression=args.compression)
            print(f"wrote {len(paths)} runs and {Path(args.output_dir) / 'labels.csv'}")
            return 0
        return _check(args)
    except (ValueError, OSError) as err:  # OSError: unwritable --output_dir, missing files
        from neuromamba.console import one_line_error

        print(f"preprocess.py {args.command}: error: {one_line_error(err)}", file=sys.stderr)
        return 2


def run(argv=None) -> int:
    """The command as the shell runs it."""
    return main(argv)
