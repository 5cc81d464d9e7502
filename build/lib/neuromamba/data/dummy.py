"""Synthetic brain-shaped 4D fMRI with a planted, learnable label signal (the demo data).

Each subject gets an ellipsoid "brain" in a zero background, a smooth subject-specific baseline,
and a few smooth spatial components that fluctuate over time. The label is planted in a fixed
sub-region (a sphere in one "hemisphere") twice: higher classes / larger regression targets make
the region brighter (a static signal, what the paper's ``znorm_minback`` input shows) and add
a fluctuation of their own there (a functional signal: what survives the default
``znorm_demean`` input, which removes every voxel's mean over the clip). Everything is a pure
function of (seed, subject, run, frame), so any clip can be generated on its own, in any
worker, with nothing on disk.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

BASELINE = 800.0          # raw brain intensity, like an unscaled BOLD image
TISSUE_CONTRAST = 500.0    # smooth "anatomy" shared by all subjects, as after MNI normalisation;
                           # it puts the scaled background near -4, as in real runs
SUBJECT_VARIATION = 60.0   # smooth per-subject baseline variation
TEMPORAL_AMPLITUDE = 40.0  # fluctuation of the spatial components over time
SIGNAL_GAIN = 1.0          # region intensity x (1 + SIGNAL_GAIN * label strength in [0, 1])
SIGNAL_FLUCTUATION = 200.0  # + SIGNAL_FLUCTUATION * strength * unit-variance noise per frame in the region
NUM_COMPONENTS = 3
AGE_RANGE = (20.0, 80.0)
# What one label belongs to: a subject, or a run (task state: the label is the run's state).
LABEL_LEVELS = ("subject", "run")
DUMMY_VOXEL_MM = 2.0       # voxel size recorded for the synthetic runs


@dataclass(frozen=True)
class DummySpec:
    num_subjects: int = 40
    img_size: tuple = (96, 96, 96)
    num_frames: int = 40
    num_runs: int = 1
    seed: int = 1234
    num_classes: int = 2
    label_level: str = "subject"  # one of LABEL_LEVELS

    def __post_init__(self):
        if self.num_subjects < 3:
            raise ValueError("--dummy_num_subjects must be at least 3 (train/val/test)")
        if self.label_level not in LABEL_LEVELS:
            raise ValueError(f"--dummy_label_level {self.label_level!r}: choose one of {list(LABEL_LEVELS)}")


def default_num_frames(clip_length: int) -> int:
    """Frames per Dummy run when --dummy_num_frames is not given: two clips' worth."""
    return 2 * int(clip_length)


def subject_ids(spec: DummySpec) -> list:
    return [f"dummy{i:04d}" for i in range(spec.num_subjects)]


def run_ids(spec: DummySpec) -> list:
    return [f"run{r}" for r in range(spec.num_runs)]


def class_labels(spec: DummySpec) -> dict:
    """Balanced classes: {(subject, run): class index}."""
    subjects, runs = subject_ids(spec), run_ids(spec)
    rng = np.random.default_rng([spec.seed, 7])
    if spec.label_level == "run":
        # Every subject has every state: run r of a subject shows state (r + offset) % C.
        offsets = rng.integers(spec.num_classes, size=len(subjects))
        return {(s, r): int((i + o) % spec.num_classes)
                for s, o in zip(subjects, offsets) for i, r in enumerate(runs)}
    # Classes alternate along the order the subject split cuts (same seed), so every split with
    # at least num_classes subjects holds every class and test AUC is always defined.
    from .splits import shuffled_subjects

    order = {s: i for i, s in enumerate(shuffled_subjects(subjects, spec.seed))}
    return {(s, r): order[s] % spec.num_classes for s in subjects for r in runs}


def regression_targets(spec: DummySpec) -> dict:
    """A continuous 'age' per subject: {(subject, run): value}."""
    rng = np.random.default_rng([spec.seed, 11])
    ages = rng.uniform(*AGE_RANGE, size=spec.num_subjects)
    return {(s, r): float(a) for s, a in zip(subject_ids(spec), ages) for r in run_ids(spec)}


def label_strength(spec: DummySpec, task_type: str, key) -> float:
    """The planted signal for a run, in [0, 1]."""
    if task_type == "regression":
        lo, hi = AGE_RANGE
        return (regression_targets(spec)[key] - lo) / (hi - lo)
    return class_labels(spec)[key] / max(spec.num_classes - 1, 1)


def _smooth_noise(rng: np.random.Generator, shape: tuple, coarse: int = 5) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish: coarse noise, trilinear upsampled (fast)."""
    import torch
    import torch.nn.functional as F

    grid = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse, coarse)).astype(np.float32))
    up = F.interpolate(grid, size=tuple(shape), mode="trilinear", align_corners=True)
    return up[0, 0].numpy()


def _ellipsoid(shape: tuple, centre, radii) -> np.ndarray:
    axes = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    dist = sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii))
    return dist <= 1.0


def signal_region(shape: tuple) -> np.ndarray:
    """The fixed sub-region carrying the label (same for every subject)."""
    centre = [0.35 * (n - 1) if i == 0 else 0.5 * (n - 1) for i, n in enumerate(shape)]
    radius = [max(0.15 * n, 1.5) for n in shape]
    return _ellipsoid(shape, centre, radius)


@dataclass
class _SubjectVolumes:
    brain: np.ndarray       # bool (D, H, W)
    mean: np.ndarray        # float32 (D, H, W), 0 outside the brain, signal included
    components: np.ndarray  # float32 (K, D, H, W), 0 outside the brain
    frequencies: np.ndarray  # (K,)
    phases: np.ndarray      # (K,)
    stats: dict
    signal: np.ndarray      # float32 (D, H, W): the functional signal's amplitude per voxel


def _subject_volumes(spec: DummySpec, subject_index: int, run_index: int,
                     strength: float) -> _SubjectVolumes:
    shape = tuple(spec.img_size)
    rng = np.random.default_rng([spec.seed, subject_index, run_index])
    centre = [(n - 1) / 2 + rng.uniform(-0.03, 0.03) * n for n in shape]
    radii = [0.4 * n * rng.uniform(0.93, 1.0) for n in shape]
    brain = _ellipsoid(shape, centre, radii)
    anatomy = _smooth_noise(np.random.default_rng([spec.seed, 11]), shape)  # same for everyone
    mean = BASELINE + TISSUE_CONTRAST * anatomy + SUBJECT_VARIATION * _smooth_noise(rng, shape)
    # Raw brain values stay positive so that the background (raw 0) is the volume minimum
    # after scaling, as in real data.
    mean = np.maximum(mean, 0.25 * BASELINE)
    mean[signal_region(shape)] *= 1.0 + SIGNAL_GAIN * strength
    mean = np.where(brain, mean, 0.0).astype(np.float32)
    components = np.stack([_smooth_noise(rng, shape, coarse=4) for _ in range(NUM_COMPONENTS)])
    components = (components * brain * TEMPORAL_AMPLITUDE).astype(np.float32)
    values = mean[brain].astype(np.float64)
    stats = {"valid_voxels": float(values.size * spec.num_frames), "mean": float(values.mean()),
             "std": float(values.std()), "min": float(values.min()), "max": float(values.max())}
    signal = (SIGNAL_FLUCTUATION * strength * (signal_region(shape) & brain)).astype(np.float32)
    return _SubjectVolumes(brain, mean, components, rng.uniform(0.02, 0.15, NUM_COMPONENTS),
                           rng.uniform(0, 2 * np.pi, NUM_COMPONENTS), stats, signal)


class DummyGenerator:
    """Makes raw frames for (subject, run, frames); keeps a few subjects' volumes in memory."""

    def __init__(self, spec: DummySpec, task_type: str = "classification", cache_size: int = 4):
        self.spec, self.task_type, self.cache_size = spec, task_type, cache_size
        self._index = {s: i for i, s in enumerate(subject_ids(spec))}
        self._runs = {r: i for i, r in enumerate(run_ids(spec))}
        self._cache: OrderedDict = OrderedDict()

    def _volumes(self, subject: str, run: str) -> _SubjectVolumes:
        key = (subject, run)
        if key not in self._cache:
            strength = label_strength(self.spec, self.task_type, key)
            self._cache[key] = _subject_volumes(self.spec, self._index[subject], self._runs[run],
                                                strength)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def stats(self, subject: str, run: str) -> dict:
        return self._volumes(subject, run).stats

    def brain_mask(self, subject: str, run: str) -> np.ndarray:
        return self._volumes(subject, run).brain

    def frames(self, subject: str, run: str, frame_indices) -> np.ndarray:
        """Raw float32 frames (T, D, H, W), background exactly 0."""
        vol = self._volumes(subject, run)
        t = np.asarray(frame_indices, dtype=np.float32)
        courses = np.sin(2 * np.pi * vol.frequencies[None, :] * t[:, None] + vol.phases[None, :])
        out = np.tensordot(courses.astype(np.float32), vol.components, axes=(1, 0))
        out += vol.mean[None]
        if vol.signal.any():  # unit-variance noise per frame, a pure function of (seed, subject,
            # run, frame); bounded (|.| <= 1.74 * 200 < the region's least value 400) so raw
            # brain values stay positive
            keys = (self.spec.seed, self._index[subject], self._runs[run])
            course = np.array([np.random.default_rng([*keys, int(f), 7]).uniform(-3 ** 0.5, 3 ** 0.5)
                               for f in np.asarray(frame_indices)], dtype=np.float32)
            out += course[:, None, None, None] * vol.signal[None]
        return out.astype(np.float32, copy=False)


def write_dummy_runs(out_dir, spec: DummySpec, task_type: str = "classification",
                     compression: str = "none") -> list:
    """Write the dummy data as HDF5 runs (+ ``labels.csv``) to try the real-data path."""
    import csv
    from pathlib import Path

    from .. import fileio
    from . import store

    from .grid import world_grid

    gen = DummyGenerator(spec, task_type)
    world = world_grid(spec.img_size, DUMMY_VOXEL_MM)  # the synthetic brains stand in MNI space
    paths = []
    for subject in subject_ids(spec):
        for run in run_ids(spec):
            frames = gen.frames(subject, run, range(spec.num_frames))
            stats = store.compute_stats(frames, frame_axis=0)
            paths.append(store.write_run(
                store.run_path(out_dir, subject, run), frames, subject=subject, run=run,
                stats=stats, brain_mask=gen.brain_mask(subject, run),
                storage_dtype=np.dtype(np.float32), dtype_reason="dummy data",
                compression=compression, source_file="dummy",
                voxel_size=(DUMMY_VOXEL_MM,) * 3,
                extra_attrs={"grid_affine": world.affine_array, "placement": "world"}))
    classes, ages = class_labels(spec), regression_targets(spec)
    out = Path(out_dir) / "labels.csv"
    with fileio.atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "run", "label", "age"])
        for (subject, run), c in classes.items():
            writer.writerow([subject, run, c, f"{ages[(subject, run)]:.4f}"])
    return paths
