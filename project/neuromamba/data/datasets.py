"""Clip datasets over runs (HDF5 or synthetic) and the dataset registry.

An item is a dict: ``fmri`` float32 (1, D, H, W, T) scaled at load time, ``brain_mask`` bool
(D, H, W) (the run's stored brain mask: it, not the values, decides which tokens are
background), ``target`` (int64 class or float32 value; 0 when unlabelled, e.g. pretraining),
``subject``, ``run``, ``start`` (first frame). Only the clip's frames are read, in one HDF5 read
straight into a preallocated array.

With ``deliver="stored"`` (the training DataLoaders) ``fmri`` is the clip as stored, ``(T, D, H,
W)`` in the stored dtype, plus what its scaling needs (``scaling.SCALING_FIELDS``):
:func:`model_input` makes the model's clip after the batch reaches its device, so the float
conversion, scaling and layout (2-4x the clip's bytes) run on the GPU, not in the workers.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import store
from .dummy import DummyGenerator, DummySpec
from ..paper import PAPER_DEFAULTS
from .scaling import SCALING_FIELDS, get_scaling, scale_batch, scaling_fields, static_frames_for
from .windows import clip_slice, clip_span, clip_starts, clip_step


@dataclass(frozen=True)
class RunEntry:
    subject: str
    run: str
    num_frames: int
    path: str | None = None  # HDF5 file; None for synthetic runs
    shape: tuple = ()        # model grid (D, H, W) of the file
    voxel_size: tuple = ()   # mm
    grid_affine: tuple = ()  # 16 values, row-major
    placement: str = ""      # world | brain_centre | "" (unknown)


@dataclass(frozen=True)
class ClipSpec:
    """What one clip is. ``sequence_length`` frames are read from the run; a scaling with a
    static token puts ``static_frames`` frames of the static image in front of them."""

    sequence_length: int = PAPER_DEFAULTS["img_size"][3]
    stride_within_seq: int = PAPER_DEFAULTS["stride_within_seq"]
    stride_between_seq: float = PAPER_DEFAULTS["stride_between_seq"]  # in clip lengths (windows.py)
    scaling_method: str = PAPER_DEFAULTS["input_scaling_method"]
    static_frames: int = 0

    def __post_init__(self):
        get_scaling(self.scaling_method)  # fail early on a bad name
        clip_step(self.sequence_length, self.stride_within_seq, self.stride_between_seq)

    @classmethod
    def for_input(cls, img_size, patch_frames, stride_within_seq, stride_between_seq,
                  scaling_method) -> "ClipSpec":
        """The clip of ``img_size`` raw frames (the flag's meaning); a static token, if the
        scaling has one, comes on top of them."""
        return cls(int(img_size[3]), int(stride_within_seq), float(stride_between_seq),
                   scaling_method, static_frames_for(scaling_method, patch_frames))

    @classmethod
    def for_model(cls, img_size, patch_size, stride_within_seq, stride_between_seq,
                  scaling_method) -> "ClipSpec":
        """The clip a model of ``img_size``/``patch_size`` reads under ``scaling_method``."""
        static = static_frames_for(scaling_method, patch_size[3])
        if static >= int(img_size[3]):
            raise ValueError(f"--img_size T={img_size[3]} leaves no frame after the static token "
                             f"of --input_scaling_method {scaling_method} ({static} frames)")
        return cls(int(img_size[3]) - static, int(stride_within_seq), float(stride_between_seq),
                   scaling_method, static)


# ---------------------------------------------------------------------------------------------
# Frame readers: raw frames (T, D, H, W) float32 + the run's stats
# ---------------------------------------------------------------------------------------------
class HDF5Reader:
    """Keeps open h5py handles per process (opened lazily, so after a DataLoader fork), LRU."""

    def __init__(self, max_open: int = 64):
        self.max_open = max_open
        self._files: OrderedDict = OrderedDict()
        self._stats: dict = {}
        self._masks: OrderedDict = OrderedDict()
        self._voxel: OrderedDict = OrderedDict()
        self._pid = None

    def __getstate__(self):  # never send open handles to workers
        return {"max_open": self.max_open, "_files": OrderedDict(), "_stats": {},
                "_masks": OrderedDict(), "_voxel": OrderedDict(), "_pid": None}

    def _handle(self, path: str):
        import h5py

        if self._pid != os.getpid():  # forked: the parent's handles are not ours
            self._files, self._pid = OrderedDict(), os.getpid()
        f = self._files.get(path)
        if f is None:
            try:
                f = h5py.File(path, "r")
            except Exception as err:
                raise ValueError(f"{path}: cannot open HDF5 run ({type(err).__name__}: {err}); "
                                 f"run `preprocess.py check` on the folder") from err
            self._files[path] = f
            while len(self._files) > self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(path)
        return f

    def stats(self, entry: RunEntry) -> dict:
        stats = self._stats.get(entry.path)
        if stats is None:  # read once per run and process: attrs are slow-ish to parse
            stats = self._stats[entry.path] = store.read_stats(self._handle(entry.path).attrs)
        return stats

    def voxel_stats(self, entry: RunEntry) -> store.VoxelStats:
        """The run's per-voxel statistics (stored; older files: computed once), cached."""
        voxel = self._voxel.get(entry.path)
        if voxel is None:
            voxel = self._voxel[entry.path] = store.read_voxel_stats(self._handle(entry.path),
                                                                     brain=self.brain_mask(entry))
            while len(self._voxel) > self.max_open:
                self._voxel.popitem(last=False)
        return voxel

    def frames(self, entry: RunEntry, frames: slice, out: np.ndarray | None = None) -> np.ndarray:
        """Frames in the stored dtype (T, D, H, W): one read of just those chunks (into
        ``out`` when given, converting to its dtype)."""
        return store.read_frames(self._handle(entry.path)["fmri"], frames, out)

    def stored_dtype(self, entry: RunEntry) -> np.dtype:
        return self._handle(entry.path)["fmri"].dtype

    def brain_mask(self, entry: RunEntry) -> np.ndarray:
        """The run's stored brain mask (D, H, W) bool, cached for the last ``max_open`` runs."""
        mask = self._masks.get(entry.path)
        if mask is None:
            f = self._handle(entry.path)
            if "brain_mask" not in f:
                raise ValueError(f"{entry.path}: no 'brain_mask' dataset; rerun preprocess.py "
                                 f"with --overwrite")
            mask = self._masks[entry.path] = np.asarray(f["brain_mask"]).astype(bool)
            while len(self._masks) > self.max_open:
                self._masks.popitem(last=False)
        return mask

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class DummyReader:
    def __init__(self, generator: DummyGenerator):
        self.generator = generator
        self._voxel: dict = {}

    def stats(self, entry: RunEntry) -> dict:
        return self.generator.stats(entry.subject, entry.run)

    def frames(self, entry: RunEntry, frames: slice, out: np.ndarray | None = None) -> np.ndarray:
        values = self.generator.frames(entry.subject, entry.run, range(frames.start, frames.stop,
                                                                          frames.step or 1))
        if out is None:
            return values
        out[...] = values
        return out

    def stored_dtype(self, entry: RunEntry) -> np.dtype:
        return np.dtype(np.float32)  # generated in float32

    def brain_mask(self, entry: RunEntry) -> np.ndarray:
        return self.generator.brain_mask(entry.subject, entry.run)

    def voxel_stats(self, entry: RunEntry) -> store.VoxelStats:
        key = (entry.subject, entry.run)
        if key not in self._voxel:  # every frame of the run, once
            frames = self.generator.frames(entry.subject, entry.run, range(entry.num_frames))
            self._voxel[key] = store.compute_voxel_stats(frames, self.brain_mask(entry))
        return self._voxel[key]


# ---------------------------------------------------------------------------------------------
TargetFn = Callable[[RunEntry, int, int], object]  # (entry, first, last frame) -> value | None


class ClipDataset(Dataset):
    """All clips of the given runs; clips without a label (target_fn -> None) are left out.

    ``entries``, ``reader`` and ``target_fn`` speak the cohort's own subject ids;
    ``subject_prefix`` (multi-cohort: ``"{cohort}:"``) is added only to the ids the dataset
    hands out (items and :meth:`clip_subjects`)."""

    def __init__(self, entries: Sequence[RunEntry], spec: ClipSpec, reader,
                 target_fn: TargetFn | None = None, target_dtype: torch.dtype = torch.int64,
                 target_transform: Callable[[float], float] | None = None,
                 subject_prefix: str = "", deliver: str = "model"):
        if deliver not in ("model", "stored"):
            raise ValueError(f"deliver must be 'model' or 'stored', got {deliver!r}")
        self.entries, self.spec, self.reader = list(entries), spec, reader
        self.deliver = deliver
        self.subject_prefix = subject_prefix
        self.target_dtype, self.target_transform = target_dtype, target_transform
        span = clip_span(spec.sequence_length, spec.stride_within_seq)
        # Compact arrays, not Python tuples: a large cohort with a clip at every frame
        # (stride_between_seq 1/sequence_length) has tens of millions of clips.
        runs, starts_kept, targets = [], [], []
        for run_idx, entry in enumerate(self.entries):
            starts = np.asarray(clip_starts(entry.num_frames, spec.sequence_length,
                                            spec.stride_within_seq, spec.stride_between_seq),
                                dtype=np.int64)
            if target_fn is None:
                values = np.zeros(len(starts))
            else:
                found = [target_fn(entry, int(s), int(s) + span - 1) for s in starts]
                labelled = np.array([v is not None for v in found], dtype=bool)
                starts = starts[labelled] if len(starts) else starts
                values = np.asarray([v for v in found if v is not None], dtype=np.float64)
            runs.append(np.full(len(starts), run_idx, dtype=np.int64))
            starts_kept.append(starts)
            targets.append(values)
        self.index = np.stack([np.concatenate(runs or [np.zeros(0, np.int64)]),
                               np.concatenate(starts_kept or [np.zeros(0, np.int64)])],
                              axis=1).astype(np.int32)  # run index, first frame
        all_targets = np.concatenate(targets or [np.zeros(0)])
        # Integer labels stay integers (classes); regression values stay floats.
        self.targets = all_targets.astype(np.int64) if target_dtype == torch.int64 else all_targets

    def __len__(self) -> int:
        return len(self.index)

    def clip_subjects(self) -> list:
        return [self.subject_prefix + self.entries[r].subject for r in self.index[:, 0]]

    def item_layout(self, i: int) -> dict:
        """Name -> (shape, dtype) of every tensor of item ``i`` (``deliver="stored"``), without
        reading it: the clip in its run's stored dtype, the mask, the scaling fields, the
        target and the start (data/clip_buffers.py lays a batch out in one buffer by it)."""
        entry = self.entries[int(self.index[i][0])]
        grid = tuple(self.reader.brain_mask(entry).shape)
        stored = torch.from_numpy(np.empty(0, self.reader.stored_dtype(entry))).dtype
        layout = {"fmri": ((self.spec.sequence_length, *grid), stored),
                  "brain_mask": (grid, torch.bool),
                  "scale_offset": ((), torch.float32), "scale_factor": ((), torch.float32)}
        if get_scaling(self.spec.scaling_method).voxel_stats:
            layout["voxel_mean"] = (grid, torch.float32)
            if self.spec.static_frames:
                layout["static_image"] = (grid, torch.float32)
        layout["target"] = ((), self.target_dtype)
        layout["start"] = ((), torch.int64)
        return layout

    def __getitem__(self, i: int, out: np.ndarray | None = None) -> dict:
        """Clip ``i``; its frames read into ``out`` (T, D, H, W) when given (a worker's shared
        buffer: data/clip_buffers.py)."""
        run_idx, start = (int(v) for v in self.index[i])
        entry = self.entries[run_idx]
        frames = clip_slice(start, self.spec.sequence_length, self.spec.stride_within_seq)
        raw = self.reader.frames(entry, frames, out)  # (T, D, H, W), stored dtype
        if raw.shape[0] != self.spec.sequence_length:
            raise ValueError(f"{entry.path or entry.subject}: clip at frame {start} has "
                             f"{raw.shape[0]} frames, expected {self.spec.sequence_length}")
        voxel = self.reader.voxel_stats(entry) if get_scaling(self.spec.scaling_method).voxel_stats else None
        target = self.targets[i].item()
        if self.target_transform is not None:
            target = self.target_transform(target)
        item = {"fmri": torch.from_numpy(raw),
                **scaling_fields(self.reader.stats(entry), self.spec.scaling_method, voxel,
                                 static=bool(self.spec.static_frames)),
                "brain_mask": torch.from_numpy(self.reader.brain_mask(entry)),
                "target": torch.tensor(target, dtype=self.target_dtype),
                "subject": self.subject_prefix + entry.subject, "run": entry.run, "start": torch.tensor(start)}
        if self.deliver == "stored":
            return item
        batch = model_input({k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()},
                            self.spec)
        return {k: v[0] for k, v in batch.items()}


def batch_to_model(batch: dict, spec: ClipSpec, device) -> dict:
    """A loader's batch on ``device`` as the model gets it, outside a Trainer (predict, embed):
    clips as stored are moved, then scaled there (:func:`model_input`); a batch that is
    already the model's is only moved."""
    if hasattr(batch, "check"):  # a worker's shared buffer: its own checked copy
        batch = batch.to(device)
    else:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    return model_input(batch, spec) if "scale_factor" in batch else batch


def model_input(batch: dict, spec: ClipSpec) -> dict:
    """A batch of stored clips (``deliver="stored"``) made the model's: ``fmri`` becomes float32
    ``(B, 1, D, H, W, T')`` scaled as ``spec`` says, the scaling fields are dropped. Run it where
    the model runs (``FMRIDataModule.on_after_batch_transfer``). A clip with a NaN/inf value is
    refused by name: it must never reach a model."""
    fields = {k: batch.pop(k) for k in SCALING_FIELDS if k in batch}
    clips = scale_batch(batch["fmri"], spec.scaling_method, fields["scale_offset"],
                        fields["scale_factor"], brain=batch.get("brain_mask"),
                        voxel_mean=fields.get("voxel_mean"), static_image=fields.get("static_image"),
                        static_frames=spec.static_frames)
    check_slot = getattr(batch, "check", None)  # a worker's shared buffer, read in place
    if check_slot is not None:
        check_slot()
        batch = dict(batch)
    finite = torch.isfinite(clips.flatten(1).sum(dim=1))  # one cheap pass
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        start = batch["start"][bad]
        raise ValueError(f"subject {batch['subject'][bad]}, run {batch['run'][bad]}: non-finite values "
                         f"(NaN/inf) in the clip at frame {int(start)}; run `preprocess.py check` on "
                         f"the folder")
    batch["fmri"] = clips
    return batch


# ---------------------------------------------------------------------------------------------
# Run discovery and the registry
# ---------------------------------------------------------------------------------------------
def discover_hdf5_runs(image_path: str | Path) -> list:
    """``{image_path}/{subject}/{run}.h5`` -> RunEntry list, every file validated first (format,
    shapes, mask, statistics, from the metadata: milliseconds per file, so even a 40k-run
    cohort is checked in a minute) so bad data fails before training starts, with every bad
    file named. Frames are checked when a clip is loaded."""
    import h5py

    from .check import check_run

    root = Path(image_path)
    if not root.is_dir():
        raise FileNotFoundError(f"--image_path {root}: no such folder")
    entries, bad = [], []
    for path in sorted(root.glob("*/*.h5")):
        result = check_run(path, full=False, frames=False)
        if not result.ok:
            bad.append(f"{path}: {result.message}")
            continue
        with h5py.File(path, "r") as f:
            affine = f.attrs.get("grid_affine")
            entries.append(RunEntry(
                path.parent.name, path.stem, int(f["fmri"].shape[0]), str(path),
                shape=tuple(int(s) for s in f["fmri"].shape[1:]),
                voxel_size=tuple(float(v) for v in np.ravel(f.attrs.get("voxel_size", ()))),
                grid_affine=() if affine is None else tuple(float(v) for v in np.ravel(affine)),
                placement=str(f.attrs.get("placement", ""))))
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"{len(bad)} bad HDF5 run(s) in {root}{more}: " + "; ".join(bad[:5])
                         + f". Run `python project/preprocess.py check {root}` to list them")
    if not entries:
        raise ValueError(f"--image_path {root}: no runs found (expected {{subject}}/{{run}}.h5 "
                         f"files written by project/preprocess.py)")
    return entries


@dataclass(frozen=True)
class DataGrid:
    """The model grid a dataset's runs share: size (voxels), voxel size (mm), voxel->world
    affine (16 values, row-major; empty when runs are centred one by one)."""

    shape: tuple
    voxel_size: tuple
    affine: tuple = ()

    def as_dict(self) -> dict:
        return {"shape": list(self.shape), "voxel_size": list(self.voxel_size),
                "affine": list(self.affine)}


def dataset_grid(entries: Sequence[RunEntry], img_size: Sequence[int], name: str) -> DataGrid:
    """The one grid all runs share; one line naming the odd file, or the right ``--img_size``."""
    first = entries[0]
    for entry in entries[1:]:
        if entry.shape != first.shape:
            raise ValueError(f"{entry.path}: grid {entry.shape} differs from {first.shape} of "
                             f"{first.path}; preprocess the whole dataset with one --target_shape")
        if not np.allclose(entry.voxel_size, first.voxel_size, atol=1e-4):
            raise ValueError(f"{entry.path}: voxel size {entry.voxel_size} mm differs from "
                             f"{first.voxel_size} mm of {first.path}; preprocess the dataset with "
                             f"one --resample_to")
        world = entry.placement == "world" and first.placement == "world"
        if world and not np.allclose(entry.grid_affine, first.grid_affine, atol=1e-4):
            raise ValueError(f"{entry.path}: placed on another world grid than {first.path}; "
                             f"preprocess the dataset with one --target_shape/--resample_to")
    if tuple(first.shape) != tuple(int(v) for v in img_size[:3]):
        raise ValueError(f"--img_size {' '.join(map(str, img_size))} does not match the grid of "
                         f"--dataset_name {name} ({' x '.join(map(str, first.shape))}, e.g. "
                         f"{first.path}); use --img_size {' '.join(map(str, first.shape))} "
                         f"{img_size[3]}")
    affine = first.grid_affine if all(e.placement == "world" for e in entries) else ()
    return DataGrid(first.shape, first.voxel_size, affine)


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry: where runs come from and how labels are read."""

    name: str
    cohort: str          # key of labels.COHORTS
    synthetic: bool = False


DATASETS = {
    "Dummy": DatasetInfo("Dummy", "CSV", synthetic=True),
    "HCP": DatasetInfo("HCP", "HCP"),
    "S1200": DatasetInfo("S1200", "HCP"),
    "ABCD": DatasetInfo("ABCD", "ABCD"),
    "UKB": DatasetInfo("UKB", "UKB"),
    "CSV": DatasetInfo("CSV", "CSV"),
}


def get_dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"--dataset_name {name!r} is unknown; choose one of {sorted(DATASETS)} "
                         f"(use CSV with --label_csv for a new dataset)") from None


def dummy_entries(spec: DummySpec) -> list:
    from .dummy import run_ids, subject_ids

    return [RunEntry(s, r, spec.num_frames) for s in subject_ids(spec) for r in run_ids(spec)]
