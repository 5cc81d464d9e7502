"""Clip windows over a run: which frames each clip reads.

A clip has ``sequence_length`` frames taken every ``stride_within_seq`` frames, so it spans
``(sequence_length - 1) * stride_within_seq + 1`` frames. Consecutive clips start
``stride_between_seq`` frames apart. Only clips that fit entirely in the run are produced (never a
short clip; SPEC §11). For non-overlapping clips use ``stride_between_seq = clip_span(...)``.
"""
from __future__ import annotations

import numpy as np


def _check_positive(**values) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value!r}")


def clip_span(sequence_length: int, stride_within_seq: int = 1) -> int:
    _check_positive(sequence_length=sequence_length, stride_within_seq=stride_within_seq)
    return (int(sequence_length) - 1) * int(stride_within_seq) + 1


def clip_starts(num_frames: int, sequence_length: int, stride_within_seq: int = 1,
                stride_between_seq: int = 1) -> list:
    """First frame of every clip that fits in ``num_frames`` frames."""
    _check_positive(stride_between_seq=stride_between_seq)
    span = clip_span(sequence_length, stride_within_seq)
    return list(range(0, int(num_frames) - span + 1, int(stride_between_seq)))


def clip_frame_indices(start: int, sequence_length: int, stride_within_seq: int = 1) -> np.ndarray:
    """Frame indices of the clip starting at ``start``."""
    _check_positive(sequence_length=sequence_length, stride_within_seq=stride_within_seq)
    return int(start) + int(stride_within_seq) * np.arange(int(sequence_length))


def clip_slice(start: int, sequence_length: int, stride_within_seq: int = 1) -> slice:
    """The same frames as :func:`clip_frame_indices`, as a slice for a single HDF5 read."""
    return slice(int(start), int(start) + clip_span(sequence_length, stride_within_seq),
                 int(stride_within_seq))
