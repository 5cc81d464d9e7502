"""Learning-rate schedule and optimizer parameter groups (SPEC §9).

`CosineAnnealingWarmUpRestarts` is stepped once per optimizer step. Inside each cycle the
learning rate rises linearly from ``min_lr`` to the cycle's peak over the first
``warmup_ratio`` of the cycle, then follows a half cosine down to ``min_lr`` on the cycle's
last step. ``min_lr = min_lr_ratio * peak`` of the first cycle; every later cycle's peak is
multiplied by ``gamma``. With one cycle (``cycle=1.0``) the last step of the run is at min_lr.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler


def lr_at_step(step: int, *, max_lr: float, total_steps: int, warmup_ratio: float = 0.05,
               min_lr_ratio: float = 0.01, cycle: float = 1.0, gamma: float = 1.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of a run of ``total_steps``."""
    total_steps = max(int(total_steps), 1)
    step = min(max(int(step), 0), total_steps - 1)  # a mis-estimated run length keeps the last value
    cycle_len = min(max(int(round(cycle * total_steps)), 1), total_steps)
    # A remainder shorter than a cycle is folded into the last cycle, so the run always ends
    # at min_lr instead of jumping back to a peak for a few steps.
    num_cycles = max(total_steps // cycle_len, 1)
    cycle_index = min(step // cycle_len, num_cycles - 1)
    pos = step - cycle_index * cycle_len
    this_cycle_len = cycle_len if cycle_index < num_cycles - 1 else total_steps - cycle_index * cycle_len
    min_lr = min_lr_ratio * max_lr
    peak = max_lr * (gamma ** cycle_index)
    if this_cycle_len == 1:
        return peak
    warmup = min(int(round(warmup_ratio * this_cycle_len)), this_cycle_len - 1)
    if pos < warmup:
        return min_lr + (peak - min_lr) * pos / warmup
    decay_len = this_cycle_len - 1 - warmup
    if decay_len == 0:
        return peak
    progress = (pos - warmup) / decay_len
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineAnnealingWarmUpRestarts(LRScheduler):
    """Per-step warmup + cosine schedule; each param group's initial lr is its peak."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int,
                 warmup_ratio: float = 0.05, min_lr_ratio: float = 0.01, cycle: float = 1.0,
                 gamma: float = 1.0, last_epoch: int = -1):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if not 0.0 < cycle <= 1.0:
            raise ValueError(f"cycle must be a fraction of the run in (0, 1], got {cycle}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.total_steps = int(total_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.min_lr_ratio = float(min_lr_ratio)
        self.cycle = float(cycle)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [lr_at_step(self.last_epoch, max_lr=base_lr, total_steps=self.total_steps,
                           warmup_ratio=self.warmup_ratio, min_lr_ratio=self.min_lr_ratio,
                           cycle=self.cycle, gamma=self.gamma)
                for base_lr in self.base_lrs]


def _skips_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    # Norm weights, biases and other 1-D parameters (Mamba2's A_log, D, dt_bias) are not decayed;
    # modules can opt other tensors out by setting `param._no_weight_decay = True` (mamba_ssm's
    # convention, also used for prompts).
    return (param.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower()
            or getattr(param, "_no_weight_decay", False))


def param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                 weight_decay: float) -> list[dict]:
    """AdamW groups from the trainable parameters only (frozen ones never reach the optimizer)."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if _skips_weight_decay(name, param) else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("no trainable parameters: everything is frozen")
    return groups


def build_optimizer(named_parameters, *, learning_rate: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(named_parameters, weight_decay), lr=learning_rate,
                             betas=betas)
