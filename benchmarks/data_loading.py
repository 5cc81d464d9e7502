"""Data-loading benchmark: the HDF5 run format against the raw-bytes floor and the peers' layout.

Reads 96^3 x 20 fp16 clips (realistic brain data: the Dummy generator's ellipsoid brain in a zero
background) from
  * HDF5 runs (uncompressed and lzf), one TR per chunk, ``read_direct`` into a preallocated array;
  * a memory-mapped ``.npy`` of the same bytes (the floor: nothing can read them faster);
  * one ``torch.save`` file per frame (the SwiFT/NeuroMamba/NeuroSTORM layout).
Two levels: ``read`` (the clip's bytes into memory, in this process) and ``dataset`` (the item a
training DataLoader delivers, through 1 and 2 workers: the clip as stored plus its scaling
fields; the float conversion, scaling and layout happen after the transfer, on the GPU). The
row "scaled in the worker" is the item as the workers made it before (float32, scaled, time
last). Every ratio is to the read floor (npy memmap, read level). Prints the table and writes
its rows to ``<out>/results.json``; then times preprocessing of one 96^3 x N run against
nibabel's load of the same file. Files are read from a warm page cache.

  python benchmarks/data_loading.py --out /tmp/nm_bench
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


from neuromamba.data import store  # noqa: E402
from neuromamba.data.clip_buffers import ClipConcat, collate_clips  # noqa: E402
from neuromamba.data.datasets import ClipDataset, ClipSpec, HDF5Reader, RunEntry  # noqa: E402
from neuromamba.data.dummy import DummyGenerator, DummySpec  # noqa: E402
from neuromamba.data.windows import clip_starts  # noqa: E402

GRID = (96, 96, 96)


# ---------------------------------------------------------------------------------------------
def make_data(out: Path, runs: int, frames: int) -> dict:
    """Write every format once; return paths and stats per run."""
    spec = DummySpec(num_subjects=max(runs, 3), img_size=GRID, num_frames=frames, seed=0)
    gen = DummyGenerator(spec)
    info = {}
    for r in range(runs):
        subject = f"dummy{r:04d}"
        raw = np.empty((frames,) + GRID, np.float16)
        for start in range(0, frames, 50):  # bounded memory
            idx = range(start, min(start + 50, frames))
            raw[start:start + len(idx)] = gen.frames(subject, "run0", idx)
        stats = store.compute_stats(raw, frame_axis=0)
        mask = np.any(raw != 0, axis=0)
        paths = {}
        for comp in ("none", "lzf"):
            p = out / f"h5_{comp}" / subject / "run0.h5"
            if not p.exists():
                store.write_run(p, raw, subject=subject, run="run0", stats=stats, brain_mask=mask,
                                storage_dtype=np.dtype(np.float16), compression=comp)
            paths[f"h5_{comp}"] = p
        p = out / "npy" / f"{subject}.npy"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, raw)
        paths["npy"] = p
        folder = out / "torch_frames" / "img" / subject
        if not (folder / f"frame_{frames - 1}.pt").exists():
            folder.mkdir(parents=True, exist_ok=True)
            for t in range(frames):
                torch.save(torch.from_numpy(raw[t][..., None].copy()), folder / f"frame_{t}.pt")
            torch.save({"valid_voxels": stats.valid_voxels, "global_mean": stats.mean,
                        "global_std": stats.std, "global_max": stats.max},
                       folder / "global_stats.pt")
        paths["torch_frames"] = folder
        info[subject] = {"paths": paths, "stats": stats.as_dict(), "frames": frames}
    return info


def clip_list(info: dict, length: int, seed: int = 0) -> list:
    clips = [(s, start) for s, d in info.items()
             for start in clip_starts(d["frames"], length, 1, length)]
    order = np.random.default_rng(seed).permutation(len(clips))
    return [clips[i] for i in order]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Read level: bytes of one clip into a preallocated (T, D, H, W) fp16 array
# ---------------------------------------------------------------------------------------------
def read_npy(info, clips, length, out):
    arrays = {s: np.load(d["paths"]["npy"], mmap_mode="r") for s, d in info.items()}
    for s, start in clips:
        out[...] = arrays[s][start:start + length]


def read_h5(kind, how):
    def reader(info, clips, length, out):
        import h5py

        files = {s: h5py.File(d["paths"][kind], "r") for s, d in info.items()}
        for s, start in clips:
            dset = files[s]["fmri"]
            if how == "store":  # what ClipDataset uses
                store.read_frames(dset, slice(start, start + length), out)
            elif how == "read_direct":
                dset.read_direct(out, source_sel=np.s_[start:start + length])
            else:
                out[...] = dset[start:start + length]
        for f in files.values():
            f.close()
    return reader


def read_torch_frames(info, clips, length, out):
    for s, start in clips:
        folder = info[s]["paths"]["torch_frames"]
        for t in range(length):
            out[t] = torch.load(folder / f"frame_{start + t}.pt", weights_only=True).numpy()[..., 0]


def time_reads(fn, info, clips, length) -> float:
    """Clips/s of one pass (a fresh buffer per call, warm handles inside ``fn``)."""
    out = np.empty((length,) + GRID, np.float16)
    t0 = time.perf_counter()
    fn(info, clips, length, out)
    return len(clips) / (time.perf_counter() - t0)


def interleaved_best(timers: dict, repeats: int) -> dict:
    """Best rate of each timer over ``repeats`` rounds, the timers taking turns in every round,
    so a burst of load from other processes hits all of them alike."""
    best = {name: 0.0 for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            best[name] = max(best[name], timer())
    return best


# ---------------------------------------------------------------------------------------------
# Dataset level: the item a training DataLoader delivers (the clip as stored), through workers
# ---------------------------------------------------------------------------------------------
class _ClipsOf(Dataset):
    """The stored clip, as ClipDataset(deliver="stored") gives it, from another storage layout
    (for the comparison only)."""

    def __init__(self, info, clips, length, scaling="znorm_minback"):
        self.info, self.clips, self.length, self.scaling = info, clips, length, scaling
        self._arrays = None

    def _raw(self, subject, start):
        raise NotImplementedError

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        subject, start = self.clips[i]
        return {"fmri": torch.from_numpy(self._raw(subject, start)), "subject": subject,
                "start": torch.tensor(start)}


class NpyClips(_ClipsOf):
    def _raw(self, subject, start):
        if self._arrays is None:
            self._arrays = {s: np.load(d["paths"]["npy"], mmap_mode="r")
                            for s, d in self.info.items()}
        out = np.empty((self.length,) + GRID, np.float16)
        out[...] = self._arrays[subject][start:start + self.length]
        return out


class TorchFrameClips(_ClipsOf):
    def _raw(self, subject, start):
        folder = self.info[subject]["paths"]["torch_frames"]
        out = np.empty((self.length,) + GRID, np.float16)
        for t in range(self.length):
            out[t] = torch.load(folder / f"frame_{start + t}.pt", weights_only=True).numpy()[..., 0]
        return out


def hdf5_clips(info, clips, length, kind, deliver="stored"):
    """The training feed's dataset (ClipConcat: each worker reads into its reused shared
    buffers) over the runs, and the benchmark's clip order as its sampler."""
    entries = [RunEntry(s, "run0", d["frames"], str(d["paths"][kind])) for s, d in info.items()]
    base = ClipDataset(entries, ClipSpec(length, 1, length, "znorm_minback"), HDF5Reader(),
                       deliver=deliver)
    position = {(base.entries[int(r)].subject, int(s)): i for i, (r, s) in enumerate(base.index)}
    dataset = ClipConcat([base]) if deliver == "stored" else base
    return dataset, [position[c] for c in clips]


class LoaderTimer:
    """Clips/s of one epoch through a DataLoader with persistent workers (batch size 1), with
    the training feed's collate."""

    def __init__(self, dataset, workers: int):
        dataset, order = dataset if isinstance(dataset, tuple) else (dataset, None)
        self.loader = DataLoader(dataset, batch_size=1, num_workers=workers, sampler=order,
                                 persistent_workers=workers > 0, shuffle=False,
                                 collate_fn=collate_clips)
        for _ in self.loader:  # warm-up epoch: starts the workers, opens the files
            pass

    def __call__(self) -> float:
        t0 = time.perf_counter()
        n = sum(1 for _ in self.loader)
        return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
def preprocessing_timing(out: Path, frames: int) -> tuple:
    """(nibabel load seconds, preprocess seconds) for one 96^3 x frames .nii.gz run."""
    import nibabel as nib

    from neuromamba.data.preprocess_runner import PreprocessOptions, RunJob, preprocess_one

    path = out / "prep" / f"bench_run{frames}.nii.gz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = DummySpec(num_subjects=3, img_size=(91, 109, 91), num_frames=frames, seed=1)
        data = DummyGenerator(spec).frames("dummy0000", "run0", range(frames))
        # FSL's MNI152 2 mm grid (LAS), so the run is placed on the world grid by an offset
        affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
        nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1), affine), str(path))
        del data
    t0 = time.perf_counter()
    arr = np.asarray(nib.load(str(path)).dataobj)
    t_load = time.perf_counter() - t0
    del arr
    target = out / "prep" / "h5"
    options = PreprocessOptions(min_frames=20, overwrite=True)
    t0 = time.perf_counter()
    result = preprocess_one(RunJob(str(path), "bench", "run0"), str(target), options)
    t_prep = time.perf_counter() - t0
    if result.status != "done":
        raise RuntimeError(result.message)
    return t_load, t_prep, result.message


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="scratch folder for the files")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--frames", type=int, default=120, help="frames per run")
    p.add_argument("--length", type=int, default=20, help="clip length T")
    p.add_argument("--repeats", type=int, default=3, help="best of N passes")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--prep_frames", type=int, default=1200,
                   help="frames of the preprocessing-timing run (0 skips it)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    info = make_data(args.out, args.runs, args.frames)
    clips = clip_list(info, args.length)
    mb_per_clip = args.length * np.prod(GRID) * 2 / 1e6
    print(f"{len(clips)} clips of {GRID} x {args.length} fp16 ({mb_per_clip:.1f} MB each) from "
          f"{args.runs} runs x {args.frames} frames; best of {args.repeats} interleaved rounds; "
          f"torch threads 1")
    print("disk: " + ", ".join(f"{k} {dir_size(args.out / k) / 1e6:.0f} MB"
                               for k in ("npy", "h5_none", "h5_lzf", "torch_frames")))

    rows = []
    readers = {"npy memmap (floor)": read_npy,
               "hdf5 store.read_frames (raw chunks)": read_h5("h5_none", "store"),
               "hdf5 read_direct": read_h5("h5_none", "read_direct"),
               "hdf5 plain slice": read_h5("h5_none", "slice"),
               "hdf5 lzf store.read_frames": read_h5("h5_lzf", "store"),
               "torch.save per frame": read_torch_frames}
    for fn in readers.values():  # warm the page cache
        time_reads(fn, info, clips, args.length)
    rates = interleaved_best({name: (lambda fn=fn: time_reads(fn, info, clips, args.length))
                              for name, fn in readers.items()}, args.repeats)
    floor = rates["npy memmap (floor)"]  # the read floor: every ratio below is to it
    for name, rate in rates.items():
        rows.append(("read", name, "-", rate, rate * mb_per_clip, rate / floor))

    for workers in args.workers:
        timers = {"npy memmap (one new shared segment per batch)": LoaderTimer(NpyClips(info, clips, args.length), workers),
                  "hdf5 (ClipDataset, as stored)": LoaderTimer(
                      hdf5_clips(info, clips, args.length, "h5_none"), workers),
                  "hdf5 (ClipDataset, scaled in the worker)": LoaderTimer(
                      hdf5_clips(info, clips, args.length, "h5_none", deliver="model"), workers),
                  "hdf5 lzf (ClipDataset, as stored)": LoaderTimer(
                      hdf5_clips(info, clips, args.length, "h5_lzf"), workers),
                  "torch.save per frame": LoaderTimer(
                      TorchFrameClips(info, clips, args.length), workers)}
        rates = interleaved_best(timers, args.repeats)
        for name, rate in rates.items():
            rows.append(("dataset", name, workers, rate, rate * mb_per_clip, rate / floor))
        del timers  # stop the persistent workers

    print()
    print("| level | storage | workers | clips/s | MB/s | ratio to floor |")
    print("|---|---|---|---|---|---|")
    for level, name, workers, rate, mbs, ratio in rows:
        print(f"| {level} | {name} | {workers} | {rate:.1f} | {mbs:.0f} | {ratio:.2f} |")
    results = args.out / "results.json"
    tmp = results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([{"level": level, "storage": name, "workers": workers,
                                "clips_per_s": round(rate, 2), "ratio_to_floor": round(ratio, 3)}
                               for level, name, workers, rate, _, ratio in rows], indent=2))
    os.replace(tmp, results)  # never half-written
    print(f"rows written to {results}")

    if args.prep_frames:
        t_load, t_prep, dtype = preprocessing_timing(args.out, args.prep_frames)
        print()
        print(f"preprocessing one 91x109x91 x {args.prep_frames} float32 .nii.gz run -> 96^3 HDF5: "
              f"{t_prep:.1f} s; nibabel load of the same file: {t_load:.1f} s; ratio "
              f"{t_prep / t_load:.2f} (stored as: {dtype})")


if __name__ == "__main__":
    main()
