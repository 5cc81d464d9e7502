"""Clip windows over a run: which frames each clip reads.

A clip has ``sequence_length`` frames taken every ``stride_within_seq`` frames, so it spans
``(sequence_length - 1) * stride_within_seq + 1`` frames. ``stride_between_seq`` keeps the
original NeuroMamba/SwiFT meaning: the distance between consecutive clip starts in units of the
clip length ``sequence_length * stride_within_seq`` (1: clips tile the run without overlap; 0.5:
half overlap; 2: skip a clip's worth of frames), rounded to whole frames and at least 1. Only clips
that fit entirely in the run are produced: never a short clip (the peers' defect, SPEC §11).
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


def clip_step(sequence_length: int, stride_within_seq: int = 1,
              stride_between_seq: float = 1.0) -> int:
    """Frames between consecutive clip starts."""
    _check_positive(sequence_length=sequence_length, stride_within_seq=stride_within_seq)
    if not isinstance(stride_between_seq, (int, float)) or not stride_between_seq > 0:
        raise ValueError(f"--stride_between_seq must be a positive number of clip lengths, "
                         f"got {stride_between_seq!r}")
    return max(int(round(stride_between_seq * sequence_length * stride_within_seq)), 1)


def clip_starts(num_frames: int, sequence_length: int, stride_within_seq: int = 1,
                stride_between_seq: float = 1.0) -> list:
    """First frame of every clip that fits in ``num_frames`` frames."""
    step = clip_step(sequence_length, stride_within_seq, stride_between_seq)
    span = clip_span(sequence_length, stride_within_seq)
    return list(range(0, int(num_frames) - span + 1, step))


def clip_frame_indices(start: int, sequence_length: int, stride_within_seq: int = 1) -> np.ndarray:
    """Frame indices of the clip starting at ``start``."""
    _check_positive(sequence_length=sequence_length, stride_within_seq=stride_within_seq)
    return int(start) + int(stride_within_seq) * np.arange(int(sequence_length))


def clip_slice(start: int, sequence_length: int, stride_within_seq: int = 1) -> slice:
    """The same frames as :func:`clip_frame_indices`, as a slice for a single HDF5 read."""
    return slice(int(start), int(start) + clip_span(sequence_length, stride_within_seq),
                 int(stride_within_seq))
