"""Samplers for DDP: evaluation without duplicated clips, and cohort-balanced training.

Both subclass ``DistributedSampler`` so Lightning (``use_distributed_sampler=True``) keeps them
instead of wrapping or replacing them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.utils.data import DistributedSampler


class EpochShuffleSampler(torch.utils.data.Sampler):
    """The training order of one process: a permutation drawn from (seed, epoch) alone, so a
    resumed run sees the order the interrupted one saw. ``skip`` indices of the next epoch are
    left out once: a run resumed mid-epoch continues with the clips it had not reached."""

    def __init__(self, num_items: int, seed: int):
        self.num_items, self.seed, self.epoch, self.skip = int(num_items), int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.num_items


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank r gets clips r, r + W, r + 2W, ...: every clip exactly once over all ranks.

    The stock DistributedSampler pads the last round by repeating clips, which biases metrics;
    here ranks may get one clip fewer, so gather predictions (not per-rank means).
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False,
                         drop_last=False)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))
        self.total_size = len(self.dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class DistributedWeightedSampler(DistributedSampler):
    """Weighted sampling with replacement, identical draw on every rank, then split by rank.

    Every epoch all ranks draw the same ``ceil(n / W) * W`` indices from ``weights`` with a
    generator seeded by (seed, epoch) and keep every W-th one, so the ranks see disjoint slices of
    one weighted stream and the same number of batches. Works without a process group (W = 1).
    """

    def __init__(self, dataset, weights: Sequence[float], num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0, num_samples: int | None = None):
        if num_replicas is None and not torch.distributed.is_initialized():
            num_replicas, rank = 1, 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if len(self.weights) != len(dataset):
            raise ValueError("one weight per clip is required")
        total = num_samples or len(dataset)
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(draw[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


# --cohort_sampling: clips in proportion to cohort size, or the same mass per cohort.
COHORT_SAMPLINGS = ("proportional", "uniform")


def check_cohort_sampling(mode: str) -> str:
    if mode not in COHORT_SAMPLINGS:
        raise ValueError(f"--cohort_sampling {mode!r}: choose one of {list(COHORT_SAMPLINGS)}")
    return mode


def cohort_weights(cohort_of_clip: Sequence[int], mode: str) -> list | None:
    """Per-clip weights: None for 'proportional' (plain shuffling), equal cohort mass for 'uniform'."""
    if check_cohort_sampling(mode) == "proportional":
        return None
    counts = {}
    for c in cohort_of_clip:
        counts[c] = counts.get(c, 0) + 1
    return [1.0 / counts[c] for c in cohort_of_clip]
