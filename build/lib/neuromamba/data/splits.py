"""Subject-level train/val/test splits, saved in the original's split-file format.

Split file format (one id per line)::

    train_subjects
    <id>
    ...
    val_subjects
    <id>
    ...
    test_subjects
    <id>
    ...

The split is drawn with a generator local to this module seeded by ``seed`` (never the global
RNG), so it is the same in every process and independent of what ran before. Under DDP, rank 0
writes the file and the other ranks read it after a barrier.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .. import fileio

SPLIT_NAMES = ("train", "val", "test")
HEADERS = {name: f"{name}_subjects" for name in SPLIT_NAMES}


def split_sizes(n: int, train_split: float, val_split: float) -> tuple:
    """(n_train, n_val, n_test); val and test each get at least one subject."""
    if not (0 < train_split < 1 and 0 < val_split < 1 and train_split + val_split < 1):
        raise ValueError(f"--train_split {train_split} and --val_split {val_split} must be in "
                         f"(0, 1) and sum to less than 1 (the rest is the test split)")
    if n < 3:
        raise ValueError(f"need at least 3 subjects for train/val/test splits, found {n}")
    n_val = max(1, int(round(n * val_split)))
    n_test = max(1, int(round(n * (1 - train_split - val_split))))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} subjects are too few for a non-empty train split")
    return n_train, n_val, n_test


def make_split(subjects: Sequence[str], train_split: float = 0.8, val_split: float = 0.1,
               seed: int = 1234) -> dict:
    """Shuffle the sorted unique subjects with a local seeded generator and cut."""
    unique = sorted(set(map(str, subjects)))
    n_train, n_val, _ = split_sizes(len(unique), train_split, val_split)
    shuffled = shuffled_subjects(unique, seed)
    return {"train": sorted(shuffled[:n_train]),
            "val": sorted(shuffled[n_train:n_train + n_val]),
            "test": sorted(shuffled[n_train + n_val:])}


def shuffled_subjects(subjects: Sequence[str], seed: int) -> list:
    """The seeded order a split cuts into train | val | test."""
    unique = sorted(set(map(str, subjects)))
    order = np.random.default_rng(seed).permutation(len(unique))
    return [unique[i] for i in order]


def write_split_file(path: str | Path, split: Mapping[str, Sequence[str]]) -> Path:
    lines = []
    for name in SPLIT_NAMES:
        lines.append(HEADERS[name])
        lines.extend(str(s) for s in split[name])
    return fileio.atomic_write_text(path, "\n".join(lines) + "\n")


def read_split_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--split_file {path}: no such file")
    split, current = {name: [] for name in SPLIT_NAMES}, None
    header_to_name = {v: k for k, v in HEADERS.items()}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line in header_to_name:
            current = header_to_name[line]
        elif current is None:
            raise ValueError(f"--split_file {path} line {number}: subject id before the first "
                             f"header ({', '.join(HEADERS.values())})")
        else:
            split[current].append(line)
    check_split(split, path)
    return split


def check_split(split: Mapping[str, Sequence[str]], source="split") -> None:
    seen = {}
    for name in SPLIT_NAMES:
        for s in split[name]:
            if s in seen:
                raise ValueError(f"{source}: subject {s!r} is in both {seen[s]} and {name}")
            seen[s] = name
    if not split["train"]:
        raise ValueError(f"{source}: the train split is empty")


def check_known(split: Mapping[str, Sequence[str]], subjects: Sequence[str], source) -> None:
    """Every id in a split file must be a subject of the data; else it is a wrong file."""
    known = set(subjects)
    unknown = sorted(s for name in SPLIT_NAMES for s in split[name] if s not in known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(f"{source}: {len(unknown)} subject ids are not in the data "
                         f"(wrong --split_file or --image_path?): {shown}")


def default_split_path(output_dir: str | Path, dataset_name: str, seed: int) -> Path:
    return Path(output_dir) / "splits" / f"split_{dataset_name}_seed{seed}.txt"


def _dist_rank_world():
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size(), dist
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), None


def resolve_split(subjects: Sequence[str], *, train_split: float = 0.8, val_split: float = 0.1,
                  seed: int = 1234, split_file: str | Path | None = None,
                  output_dir: str | Path | None = None, dataset_name: str = "data",
                  wait_timeout_s: float = 600.0) -> tuple:
    """Return (split dict, path of the split file used or written or None).

    Order: a given ``split_file``; else the file under ``output_dir`` if present; else a new split
    (written there by rank 0 while the others wait for it).
    """
    subjects = sorted(set(map(str, subjects)))
    if split_file:
        split = read_split_file(split_file)
        check_known(split, subjects, f"--split_file {split_file}")
        return split, Path(split_file)
    if output_dir is None:
        return make_split(subjects, train_split, val_split, seed), None
    path = default_split_path(output_dir, dataset_name, seed)
    publish_split(path, lambda: make_split(subjects, train_split, val_split, seed),
                  wait_timeout_s)
    split = read_split_file(path)
    check_known(split, subjects, f"split file {path}")
    return split, path


def publish_split(path: Path, make, wait_timeout_s: float = 600.0) -> None:
    """Rank 0 writes ``make()`` to ``path`` unless it exists; every rank returns once it does
    (a barrier under an initialised process group, else polling with a timeout)."""
    rank, world, dist = _dist_rank_world()
    if rank == 0 and not Path(path).exists():
        write_split_file(path, make())
    if dist is not None and world > 1:
        dist.barrier()
    else:
        _wait_for(Path(path), wait_timeout_s)


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for rank 0 to write the split file {path}")
        time.sleep(0.2)
