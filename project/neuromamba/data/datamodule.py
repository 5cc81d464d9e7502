"""The Lightning DataModule: runs -> labels -> subject split -> clip datasets -> loaders.

Several cohorts can be combined (``dataset_name`` and ``image_path`` as equal-length lists, for
multi-cohort pretraining); subject ids then become ``"{cohort}:{subject}"`` so they never
collide, the split is drawn per cohort (each cohort keeps its 80/10/10), and training samples
clips either in proportion to cohort size or uniformly over cohorts (``cohort_sampling``).

Under DDP the loaders carry their own samplers: a seeded ``DistributedSampler`` (or the
cohort-weighted :class:`DistributedWeightedSampler`) for training and an
:class:`UnpaddedDistributedSampler` for evaluation, so no clip is evaluated twice.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..console import NeuroMambaWarning
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, WeightedRandomSampler

from . import dummy as dummy_data
from .datasets import (ClipDataset, model_input, ClipSpec, DataGrid, DummyReader, HDF5Reader, dataset_grid,
                       discover_hdf5_runs, dummy_entries, get_dataset_info)
from .clip_buffers import ClipConcat, collate_clips
from .grid import world_grid
from .scaling import LEAK_LIMIT, get_scaling, min_safe_run_frames, predictable_share
from .windows import clip_span
from .labels import (LabelTable, find_label_csv, load_label_table, report_unlabelled,
                     save_class_mapping)
from ..paper import PAPER_DEFAULTS
from .samplers import (DistributedWeightedSampler, EpochShuffleSampler, UnpaddedDistributedSampler, check_cohort_sampling,
                       cohort_weights)
from .splits import SPLIT_NAMES, default_split_path, publish_split, resolve_split

COHORT_SEPARATOR = ":"


def _as_list(value) -> list:
    if value is None:
        return [None]
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class _Cohort:
    """One cohort's runs, reader and labels, all in the cohort's own subject ids; only the
    ids the data module hands out (splits, batches) carry ``prefix``."""

    name: str
    entries: list          # RunEntry with the cohort's own subject ids
    reader: object
    labels: LabelTable | None
    prefix: str            # "" or "{name}:"
    grid: DataGrid | None = None

    def qualified(self, subject: str) -> str:
        return self.prefix + subject


@dataclass(frozen=True)
class DataOptions:
    """Everything about a run's data that is not its input spec: cohorts, labels, splits,
    batches, loading. Built once from the command's flags (``from_values``) at the edge."""

    dataset_name: Any = "Dummy"
    image_path: Any = None
    label_csv: Any = None
    subject_column: str = "subject"
    target_column: Optional[str] = None
    downstream_task: Optional[str] = None
    downstream_task_type: str = "classification"
    pretraining: bool = False
    train_split: float = 0.8
    val_split: float = 0.1
    split_file: Optional[str] = None
    output_dir: Optional[str] = None
    batch_size: int = 4
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    seed: int = 1234
    pin_memory: Optional[bool] = None
    cohort_sampling: str = "proportional"
    dummy_num_subjects: int = 40
    dummy_num_frames: Optional[int] = None
    dummy_num_runs: int = 1
    dummy_label_level: str = "subject"
    dummy_num_classes: int = 2
    equal_eval_batches: bool = False
    deliver: str = "stored"

    @classmethod
    def from_values(cls, values: Mapping, **overrides) -> "DataOptions":
        """The options named in ``values`` (a command's flags as a mapping; others keep their
        defaults), then ``overrides``."""
        names = {f.name for f in dataclass_fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})


class FMRIDataModule(pl.LightningDataModule):
    # What a clip is comes from the run's input spec; everything else from its DataOptions.
    SPEC_FIELDS = ("img_size", "stride_within_seq", "stride_between_seq", "input_scaling_method")

    @classmethod
    def from_spec(cls, input_spec, patch_frames: int, options: DataOptions) -> "FMRIDataModule":
        """The data of a run: what a clip is from its input spec (a spec.InputSpec, or its
        dict: clip size in raw frames, strides, scaling), the rest from its typed data options."""
        read = input_spec.get if isinstance(input_spec, Mapping) else lambda k: getattr(input_spec, k)
        spec = {k: read(k) for k in cls.SPEC_FIELDS}
        spec["img_size"] = tuple(spec["img_size"])
        return cls(**spec, patch_frames=int(patch_frames), **asdict(options))

    def __init__(self, dataset_name="Dummy", image_path=None, img_size=tuple(PAPER_DEFAULTS["img_size"]),
                 stride_within_seq=1, stride_between_seq=1.0,
                 input_scaling_method=PAPER_DEFAULTS["input_scaling_method"],
                 patch_frames=PAPER_DEFAULTS["patch_size"][3],
                 train_split=0.8, val_split=0.1, split_file=None, output_dir=None, label_csv=None,
                 subject_column="subject", target_column=None, downstream_task=None,
                 downstream_task_type="classification", pretraining=False, batch_size=4,
                 eval_batch_size=None, num_workers=0, seed=1234, dummy_num_subjects=40,
                 dummy_num_frames=None, pin_memory=None, cohort_sampling="proportional",
                 dummy_num_runs=1, dummy_label_level="subject", dummy_num_classes=2,
                 equal_eval_batches=False, deliver="stored"):
        super().__init__()
        # "stored": clips leave the workers as stored and are scaled after the transfer
        # (on_after_batch_transfer; training). "model": scaled in the workers, for tools that
        # index the datasets or loop over them without a Trainer. Same function either way.
        self.deliver = deliver
        self.dataset_names = [str(n) for n in _as_list(dataset_name)]
        self.image_paths = _as_list(image_path)
        if len(self.image_paths) == 1 and len(self.dataset_names) > 1:
            raise ValueError("--image_path needs one folder per --dataset_name "
                             f"({len(self.dataset_names)} given)")
        if len(self.image_paths) != len(self.dataset_names):
            raise ValueError(f"--dataset_name ({len(self.dataset_names)}) and --image_path "
                             f"({len(self.image_paths)}) must have the same length")
        self.label_csvs = _as_list(label_csv)
        if len(self.label_csvs) == 1:
            self.label_csvs = self.label_csvs * len(self.dataset_names)
        if len(self.label_csvs) != len(self.dataset_names):
            raise ValueError("--label_csv needs one file per --dataset_name (or one for all)")
        for name in self.dataset_names:
            get_dataset_info(name)
        if len(img_size) != 4:
            raise ValueError(f"--img_size needs 4 values (D H W T), got {list(img_size)}")
        self.img_size = tuple(int(v) for v in img_size)
        # img_size counts the raw frames a clip reads; a static token comes on top of them.
        self.clip_spec = ClipSpec.for_input(self.img_size, int(patch_frames), stride_within_seq,
                                            stride_between_seq, input_scaling_method)
        self.train_split, self.val_split = float(train_split), float(val_split)
        self.split_file, self.output_dir = split_file, output_dir
        self.subject_column, self.target_column = subject_column, target_column
        self.downstream_task, self.pretraining = downstream_task, bool(pretraining)
        self.downstream_task_type = downstream_task_type
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.cohort_sampling = check_cohort_sampling(cohort_sampling)
        self.dummy_spec_kwargs = dict(
            num_subjects=int(dummy_num_subjects), img_size=self.img_size[:3],
            num_frames=int(dummy_num_frames or self._dummy_frames(input_scaling_method)),
            num_runs=int(dummy_num_runs),
            seed=self.seed, num_classes=int(dummy_num_classes), label_level=dummy_label_level)
        # ZeRO-3 all-gathers the parameters in every forward, so every rank must run the same
        # number of evaluation batches or the one with a batch more waits forever: pad with
        # repeated clips then (aggregate_by_subject drops the repeats). Otherwise no clip twice.
        self.equal_eval_batches = bool(equal_eval_batches)
        self.num_classes = None
        self.splits: dict = {}
        self.split_path: Path | None = None
        self.datasets: dict = {}
        self._cohorts: list = []
        self._is_setup = False

    # -----------------------------------------------------------------------------------------
    @property
    def uses_labels(self) -> bool:
        return not self.pretraining and bool(self.downstream_task or self.target_column)

    @property
    def task_type(self) -> str | None:
        return self.downstream_task_type if self.uses_labels else None

    def _load_cohort(self, name: str, image_path, label_csv, prefix: str) -> _Cohort:
        info = get_dataset_info(name)
        if info.synthetic:
            if label_csv is not None:
                # The synthetic cohort plants its own labels; a label table would be ignored.
                raise ValueError(f"--dataset_name {name} carries its own planted labels, so --label_csv "
                                 f"{label_csv} would be ignored; write the data as HDF5 runs "
                                 f"(preprocess.py dummy) and use --dataset_name CSV for your own labels")
            spec = dummy_data.DummySpec(**self.dummy_spec_kwargs)
            task_type = self.downstream_task_type if self.uses_labels else "classification"
            reader = DummyReader(dummy_data.DummyGenerator(spec, task_type))
            entries = dummy_entries(spec)
            labels = self._dummy_labels(spec, task_type) if self.uses_labels else None
            voxel = dummy_data.DUMMY_VOXEL_MM
            affine = np.ravel(world_grid(self.img_size[:3], voxel).affine_array)
            grid = DataGrid(self.img_size[:3], (voxel,) * 3, tuple(float(v) for v in affine))
        else:
            if image_path is None:
                raise ValueError(f"--image_path is required for --dataset_name {name}")
            entries = discover_hdf5_runs(image_path)
            grid = dataset_grid(entries, self.img_size, name)
            reader = HDF5Reader()
            labels = None
            if self.uses_labels:
                csv_path = label_csv or find_label_csv(image_path)
                labels = load_label_table(csv_path, info.cohort, self.downstream_task,
                                          self.downstream_task_type, self.subject_column,
                                          self.target_column)
        return _Cohort(name, entries, reader, labels, prefix, grid)

    def _dummy_labels(self, spec, task_type: str) -> LabelTable:
        if task_type == "regression":
            values = dummy_data.regression_targets(spec)
            return LabelTable("regression", dict(values), column="age")
        values = dummy_data.class_labels(spec)
        return LabelTable("classification", dict(values),
                          class_names=[str(c) for c in range(spec.num_classes)], column="label")

    def setup(self, stage: str | None = None) -> None:
        if self._is_setup:
            return
        multi = len(self.dataset_names) > 1
        if multi and len(set(self.dataset_names)) != len(self.dataset_names):
            raise ValueError("--dataset_name lists a cohort twice")
        self._cohorts = [
            self._load_cohort(name, path, csv, f"{name}{COHORT_SEPARATOR}" if multi else "")
            for name, path, csv in zip(self.dataset_names, self.image_paths, self.label_csvs)]
        self.grid = self._shared_grid()
        self.splits, self.split_path = self._resolve_splits()
        for cohort in self._cohorts:
            if cohort.labels is not None:
                report_unlabelled(sorted({e.subject for e in cohort.entries}), cohort.labels,
                                  f"{cohort.name} subjects")
        tables = [c.labels for c in self._cohorts if c.labels is not None]
        if tables and self.task_type == "classification":
            self._check_same_classes(tables)
            self.num_classes = tables[0].num_classes
            if self.output_dir:
                save_class_mapping(tables[0], Path(self.output_dir) / "label_classes.json")
        self.datasets = {name: self._build(self.splits[name]) for name in SPLIT_NAMES}
        self._warn_short_runs()
        empty = [n for n in ("train", "val") if len(self.datasets[n]) == 0]
        if empty:
            raise ValueError(f"no clips in the {', '.join(empty)} split: check the run length "
                             f"against --img_size T={self.img_size[3]} and the strides, or labels")
        for split in ("train", "val", "test"):
            self._warn_degenerate(split)
        self._is_setup = True

    def _shared_grid(self) -> DataGrid:
        """The grid every cohort shares (multi-cohort runs must agree)."""
        grids = [c.grid for c in self._cohorts]
        for cohort in self._cohorts[1:]:
            a, b = grids[0], cohort.grid
            if a.shape != b.shape or not np.allclose(a.voxel_size, b.voxel_size, atol=1e-4) or (
                    a.affine and b.affine and not np.allclose(a.affine, b.affine, atol=1e-4)):
                raise ValueError(f"--dataset_name {cohort.name} is on another grid ({b.shape} at "
                                 f"{b.voxel_size} mm) than {self._cohorts[0].name} ({a.shape} at "
                                 f"{a.voxel_size} mm); preprocess all cohorts alike")
        return grids[0]

    def _dummy_frames(self, scaling_method: str) -> int:
        """Frames of a Dummy run: two clips, or for pretraining on the run mean the shortest
        run that does not leak (what a real cohort must hold too)."""
        frames = dummy_data.default_num_frames(self.img_size[3])
        if self.pretraining and get_scaling(scaling_method).voxel_stats:
            frames = max(frames, min_safe_run_frames(self.img_size[3]))
        return frames

    def refuse_leaking_runs(self) -> None:
        """For a pretraining run (the training objective, not only unlabelled clips: the
        analysis tools read those too): on the run's per-voxel mean the mean includes the clip's
        own future frames, so part of a target follows from the frames before it (all of it
        when the clip is its whole run). Runs too short for that share to stay under
        scaling.LEAK_LIMIT are refused, naming them and the length that is safe."""
        if not get_scaling(self.clip_spec.scaling_method).voxel_stats:
            return
        frames = self.clip_spec.sequence_length
        safe = min_safe_run_frames(frames)
        short = [e for c in self._cohorts for e in c.entries if frames <= e.num_frames < safe]
        if short:
            worst = min(e.num_frames for e in short)
            names = ", ".join(f"{e.path or e.subject + '/' + e.run} ({e.num_frames} frames)" for e in short[:3])
            raise ValueError(
                f"{len(short)} run(s) are shorter than {safe} frames, so --input_scaling_method "
                f"{self.clip_spec.scaling_method} (each voxel minus its mean over the run) would let "
                f"up to {100 * predictable_share(frames, worst):.1f}% of a pretraining target follow "
                f"from the frames before it (the mean includes the clip's future; the limit is "
                f"{100 * LEAK_LIMIT:g}%): {names}{', ...' if len(short) > 3 else ''}; use runs of "
                f">= {safe} frames, a shorter --img_size T, or a scaling without the run mean")

    def _warn_short_runs(self) -> None:
        """Runs that give no clip drop out of training and metrics: say which."""
        span = clip_span(self.clip_spec.sequence_length, self.clip_spec.stride_within_seq)
        short = [e for c in self._cohorts for e in c.entries if e.num_frames < span]
        if short:
            names = ", ".join(f"{e.path or e.subject + '/' + e.run} ({e.num_frames} frames)"
                              for e in short[:5])
            warnings.warn(f"{len(short)} run(s) are shorter than one clip ({span} frames: --img_size "
                          f"T={self.img_size[3]}, --stride_within_seq "
                          f"{self.clip_spec.stride_within_seq}) and are left out: {names}"
                          f"{', ...' if len(short) > 5 else ''}", NeuroMambaWarning, stacklevel=2)

    def _warn_degenerate(self, split: str) -> None:
        """Metrics need two subjects (and, for classification, two classes) to mean anything."""
        subjects = set(self.clip_subjects(split))
        if not self.uses_labels or not len(self.datasets[split]):
            return
        if len(subjects) < 2:
            warnings.warn(f"the {split} split holds {len(subjects)} subject(s) with clips: its "
                          f"subject-level metrics are degenerate; use more subjects or another "
                          f"--train_split/--val_split", NeuroMambaWarning, stacklevel=2)
        elif self.task_type == "classification" and split == "train" and len(set(self.clip_targets(split))) < 2:
            # A model trained on one class learns nothing about the others: refuse, with the counts.
            counts = {}
            for subject, target in dict(zip(self.clip_subjects("train"), self.clip_targets("train"))).items():
                counts[target] = counts.get(target, 0) + 1
            raise ValueError(f"the train split holds a single class ({counts} subjects per class "
                             f"index); use another --seed, a split file, or check the labels")
        elif self.task_type == "classification" and len(set(self.clip_targets(split))) < 2:
            warnings.warn(f"the {split} split holds a single class ({self.clip_targets(split)[0]}): "
                          f"AUROC is undefined there; use another --seed or split file",
                          NeuroMambaWarning, stacklevel=2)

    @staticmethod
    def _subjects(cohort: _Cohort) -> list:
        """The cohort's subjects as the splits name them (qualified in multi-cohort mode)."""
        return sorted({cohort.qualified(e.subject) for e in cohort.entries})

    @staticmethod
    def _check_same_classes(tables) -> None:
        if any(t.class_names != tables[0].class_names for t in tables):
            raise ValueError("the cohorts' label tables have different classes: "
                             + "; ".join(str(t.class_names) for t in tables))

    def _resolve_splits(self):
        name = "+".join(self.dataset_names)
        if self.split_file or len(self._cohorts) == 1:
            subjects = sorted({s for c in self._cohorts for s in self._subjects(c)})
            split, path = resolve_split(subjects, train_split=self.train_split,
                                        val_split=self.val_split, seed=self.seed,
                                        split_file=self.split_file, output_dir=self.output_dir,
                                        dataset_name=name)
        else:  # one split per cohort, merged: every cohort keeps its proportions
            parts = [resolve_split(self._subjects(c), train_split=self.train_split,
                                   val_split=self.val_split, seed=self.seed, output_dir=None)[0]
                     for c in self._cohorts]
            split = {k: sorted(s for p in parts for s in p[k]) for k in SPLIT_NAMES}
            path = None
            if self.output_dir:
                path = default_split_path(self.output_dir, name, self.seed)
                publish_split(path, lambda: split)
                split, path = resolve_split([s for c in self._cohorts for s in self._subjects(c)],
                                            split_file=path)
        in_split = {s for k in SPLIT_NAMES for s in split[k]}
        left_out = sorted(s for c in self._cohorts for s in self._subjects(c) if s not in in_split)
        if left_out:
            warnings.warn(f"{len(left_out)} subjects with data are in no split of {path} and are "
                          f"not used: {', '.join(left_out[:5])}{', ...' if len(left_out) > 5 else ''}",
                          NeuroMambaWarning, stacklevel=2)
        return split, path

    def _build(self, subjects: Sequence[str]) -> ConcatDataset:
        wanted = set(subjects)
        parts = []
        for cohort in self._cohorts:
            entries = [e for e in cohort.entries if cohort.qualified(e.subject) in wanted]
            parts.append(ClipDataset(entries, self.clip_spec, cohort.reader,
                                     target_fn=self._target_fn(cohort),
                                     target_dtype=self._target_dtype(),
                                     subject_prefix=cohort.prefix, deliver=self.deliver))
        return ClipConcat(parts) if self.deliver == "stored" else ConcatDataset(parts)

    def model_batches(self, split: str, batch_size: int):
        """A split's batches as the model gets them, on the CPU, outside a Trainer (analysis
        tools, probes): the DataLoader's stored clips, then :meth:`on_after_batch_transfer`."""
        for batch in self._loader(self.datasets[split], batch_size):
            yield self.on_after_batch_transfer(batch, 0)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning's hook, after the batch reached the training device: the workers deliver
        clips as stored (pinned when on CUDA), and the float conversion, scaling and the model's
        layout happen here, on the GPU (``datasets.model_input``)."""
        return model_input(batch, self.clip_spec) if self.deliver == "stored" else batch

    def _target_dtype(self) -> torch.dtype:
        return torch.float32 if self.task_type == "regression" else torch.int64

    @staticmethod
    def _target_fn(cohort: _Cohort):
        if cohort.labels is None:
            return None
        table = cohort.labels
        return lambda entry, first, last: table.target_for(entry.subject, entry.run, first, last)

    # -----------------------------------------------------------------------------------------
    def train_target_stats(self) -> tuple:
        """(mean, std) of the regression targets of the train split (one value per labelled
        subject or run), for standardising targets."""
        if self.task_type != "regression":
            raise ValueError("train_target_stats() is for regression tasks")
        values = []
        train = set(self.splits["train"])
        for cohort in self._cohorts:
            for (subject, run), value in cohort.labels.targets.items():
                if cohort.qualified(subject) in train:
                    values.append(float(value))
        if not values:
            raise ValueError("no labelled subjects in the train split")
        std = float(np.std(values))
        return float(np.mean(values)), std if std > 0 else 1.0

    def clip_subjects(self, split: str) -> list:
        """Subject id of every clip of a split, in dataset order."""
        return [s for part in self.datasets[split].datasets for s in part.clip_subjects()]

    def class_line(self) -> str | None:
        """The classes a classification run learns, in index order, with the subjects of each
        per split: printed at start, so a mislabelled column shows before training."""
        tables = [c.labels for c in self._cohorts if c.labels is not None]
        if self.task_type != "classification" or not tables or tables[0].class_names is None:
            return None
        names = tables[0].class_names
        splits = [n for n in SPLIT_NAMES if n in self.datasets]
        counts = {n: {} for n in splits}
        for split in splits:
            for subject, target in set(zip(self.clip_subjects(split), self.clip_targets(split))):
                counts[split][target] = counts[split].get(target, 0) + 1
        per_class = ", ".join(f"{name}={i} ({'/'.join(str(counts[n].get(i, 0)) for n in splits)})"
                              for i, name in enumerate(names))
        column = f" of column {tables[0].column!r}" if tables[0].column else ""
        return (f"{len(names)} classes{column}: {per_class} subjects in "
                f"{'/'.join(splits)}")

    def clip_targets(self, split: str) -> list:
        """Target of every clip of a split, in dataset order (0 when unlabelled)."""
        return [t for part in self.datasets[split].datasets for t in part.targets.tolist()]

    def cohort_of_clips(self, split: str = "train") -> list:
        return [i for i, part in enumerate(self.datasets[split].datasets) for _ in range(len(part))]

    # -----------------------------------------------------------------------------------------
    @staticmethod
    def _distributed() -> bool:
        return (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1)

    def _loader(self, dataset, batch_size: int, sampler=None, shuffle: bool = False) -> DataLoader:
        generator = None
        if shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle,
                          generator=generator, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory,
                          drop_last=False, collate_fn=collate_clips)

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        weights = cohort_weights(self.cohort_of_clips("train"), self.cohort_sampling) \
            if len(self._cohorts) > 1 else None
        if weights is not None:
            if self._distributed():
                sampler = DistributedWeightedSampler(dataset, weights, seed=self.seed)
            else:
                generator = torch.Generator()
                generator.manual_seed(self.seed)
                sampler = WeightedRandomSampler(weights, num_samples=len(dataset),
                                                replacement=True, generator=generator)
            return self._loader(dataset, self.batch_size, sampler=sampler)
        if self._distributed():
            return self._loader(dataset, self.batch_size,
                                sampler=DistributedSampler(dataset, shuffle=True, seed=self.seed))
        return self._loader(dataset, self.batch_size, sampler=EpochShuffleSampler(len(dataset), self.seed))

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None
        if self._distributed():
            sampler = (DistributedSampler(dataset, shuffle=False, drop_last=False)
                       if self.equal_eval_batches else UnpaddedDistributedSampler(dataset))
        return self._loader(dataset, self.eval_batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
