"""What placing every run on the world grid costs in preprocessing, against per-run centring.

One 91x109x91 x N-frame run on FSL's MNI152 2 mm grid (int16 .nii.gz, the Dummy generator's
brain), saved twice: as FSL stores it (LAS) and flipped to RAS (as fMRIPrep/nilearn store it).
Each is preprocessed to a 96^3 HDF5 run with

  * ``brain_centre``: centre each run's own brain bounding box (the rule before the world grid);
  * ``world``: reorient to LAS, place by the affine on the world grid (an integer offset here).

The contenders take turns in every round (so load from other processes hits them alike); the
table gives the median seconds and the range over the rounds, and the ratio of medians.

  python benchmarks/preprocess_placement.py --frames 1200 --repeats 3 --out /tmp/nm_place
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


from neuromamba.data.dummy import DummyGenerator, DummySpec  # noqa: E402
from neuromamba.data.preprocess_runner import PreprocessOptions, RunJob, preprocess_one  # noqa: E402

FSL_2MM = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def make_runs(out: Path, frames: int) -> dict:
    """{orientation: path} of the same run stored LAS (FSL) and RAS (flipped x, fMRIPrep-like)."""
    import nibabel as nib

    paths = {"LAS": out / f"las_{frames}.nii.gz", "RAS": out / f"ras_{frames}.nii.gz"}
    if all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    spec = DummySpec(num_subjects=3, img_size=(91, 109, 91), num_frames=frames, seed=1)
    data = np.moveaxis(DummyGenerator(spec).frames("dummy0000", "run0", range(frames)), 0, -1)
    data = np.round(data).astype(np.int16)
    nib.save(nib.Nifti1Image(data, FSL_2MM), str(paths["LAS"]))
    ras = FSL_2MM.copy()
    ras[0, 0], ras[0, 3] = 2.0, -90.0  # voxel i of the flipped array is voxel 90 - i of FSL's
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1]), ras), str(paths["RAS"]))
    return paths


def time_one(path: Path, placement: str, target: Path) -> float:
    options = PreprocessOptions(min_frames=20, overwrite=True, placement=placement)
    t0 = time.perf_counter()
    result = preprocess_one(RunJob(str(path), "bench", f"{placement}_{path.stem}"), str(target), options)
    seconds = time.perf_counter() - t0
    if result.status != "done":
        raise RuntimeError(result.message)
    return seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/nm_place", help="scratch folder (~3 GB per 1,200 frames)")
    p.add_argument("--frames", type=int, default=1200, help="frames of the run")
    p.add_argument("--repeats", type=int, default=3, help="rounds; every contender runs once a round")
    args = p.parse_args(argv)
    out = Path(args.out)
    paths = make_runs(out, args.frames)
    contenders = [(o, pl) for o in ("LAS", "RAS") for pl in ("brain_centre", "world")]
    times = {c: [] for c in contenders}
    for _ in range(args.repeats):
        for orientation, placement in contenders:
            times[(orientation, placement)].append(time_one(paths[orientation], placement, out / "h5"))
    print(f"preprocessing one 91x109x91 x {args.frames} int16 .nii.gz run -> 96^3 HDF5, "
          f"{args.repeats} interleaved rounds")
    print("| input | placement | median s | range s | world / brain_centre |")
    print("|---|---|---|---|---|")
    for orientation in ("LAS", "RAS"):
        base = statistics.median(times[(orientation, "brain_centre")])
        for placement in ("brain_centre", "world"):
            t = times[(orientation, placement)]
            med = statistics.median(t)
            ratio = f"{med / base:.3f}" if placement == "world" else "1"
            print(f"| {orientation} | {placement} | {med:.2f} | {min(t):.2f}-{max(t):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
