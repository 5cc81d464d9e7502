"""Checks between the data, a checkpoint and the flags, made before any training step.

A setting that cannot hold is an error here, with the fix, not a surprise an epoch later:
a checkpoint trained on another grid or voxel size than the data, ``--test_only`` on
another split than the checkpoint's run. Which input and model a run uses is resolved once, in
:mod:`neuromamba.spec`; these checks read the checkpoint it read (``RunConfig.context.checkpoint``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from neuromamba.spec import CheckpointSettings, read_checkpoint_settings

# Released checkpoints (the original's *.pt) were pretrained on MNI152 2 mm data.
RELEASED_VOXEL_MM = 2.0


def _settings(checkpoint: Union[str, CheckpointSettings, None], allow_pickle: bool = False):
    if checkpoint is None or isinstance(checkpoint, CheckpointSettings):
        return checkpoint
    return read_checkpoint_settings(checkpoint, allow_pickle)


def grid_mismatch(data_grid: dict, trained_grid: dict) -> str:
    """'' when the two grids agree, else what differs (voxel size, size or world placement)."""
    if not trained_grid or not data_grid:
        return ""
    if list(trained_grid.get("shape", [])) != list(data_grid.get("shape", [])):
        return f"grid {trained_grid.get('shape')} vs {data_grid.get('shape')}"
    a, b = trained_grid.get("voxel_size") or [], data_grid.get("voxel_size") or []
    if a and b and not np.allclose(a, b, atol=1e-4):
        return f"voxel size {list(a)} mm vs {list(b)} mm"
    a, b = trained_grid.get("affine") or [], data_grid.get("affine") or []
    if a and b and not np.allclose(a, b, atol=1e-4):
        return "world placement (grid affine) differs"
    return ""


def check_checkpoint_grid(data_grid: dict, checkpoint: Union[str, CheckpointSettings],
                          allow_pickle: bool = False) -> list:
    """Refuse fine-tuning/evaluating a checkpoint on data of another grid; returns notes."""
    settings = _settings(checkpoint, allow_pickle)
    config = settings.config
    if config is None:  # a released/backbone-only file: it was pretrained at 2 mm
        size = (data_grid or {}).get("voxel_size") or []
        if size and not np.allclose(size, RELEASED_VOXEL_MM, atol=1e-3):
            return [f"{settings.path} was pretrained on {RELEASED_VOXEL_MM:g} mm MNI data, the data "
                    f"are {list(size)} mm; preprocess with --resample_to {RELEASED_VOXEL_MM:g} to "
                    f"match"]
        return []
    differs_ = grid_mismatch(data_grid, config.get("data_grid") or {})
    if differs_:
        raise ValueError(f"{settings.path} was trained on another grid than the data ({differs_}); "
                         f"preprocess the data like the checkpoint's run (--target_shape, "
                         f"--resample_to)")
    return []


def checkpoint_split_for_test(run) -> tuple:
    """``--test_only``: the checkpoint run's own split file to evaluate on (unless
    ``--override_checkpoint_settings``; an explicit ``--split_file`` wins), and the note that
    says so; (None, None) where the run keeps its own."""
    checkpoint = run.context.checkpoint
    config = checkpoint.config if checkpoint is not None else None
    if config is None or run.checkpoints.override_checkpoint_settings or run.split_file:
        return None, None
    split = config.get("split_file_used")
    if not split:
        return None, None
    from neuromamba.checkpoints import recorded_file, run_folder_of

    split = str(recorded_file(split, run_folder_of(run.checkpoints.test_ckpt_path)))  # a moved run folder
    if not Path(split).is_file():
        raise ValueError(f"--test_only: the split file of the checkpoint's run, {split}, is "
                         f"missing; pass --split_file (the run's splits/split_*.txt)")
    return split, f"--split_file {split} (the checkpoint's run)"
