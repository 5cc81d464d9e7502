"""Checks between the data, a checkpoint and the flags, made before any training step.

A setting that cannot hold is an error here, with the fix, not a surprise an epoch later:
a checkpoint trained on another grid or voxel size than the data, and ``--test_only`` on a
split or clip settings other than the checkpoint's own run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

# Flags that define what a clip is: --test_only takes them from the checkpoint's run.
CLIP_SETTINGS = ("img_size", "stride_within_seq", "stride_between_seq", "input_scaling_method")
# Released checkpoints (the original's *.pt) were pretrained on MNI152 2 mm data.
RELEASED_VOXEL_MM = 2.0


def project_checkpoint_config(path: str, allow_pickle: bool = False) -> Optional[dict]:
    """The run config stored in one of this project's ``.ckpt`` files; None for other formats."""
    from neuromamba.checkpoints import torch_load_file

    if not path or not Path(path).is_file():
        return None
    ckpt = torch_load_file(path, allow_pickle)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("hyper_parameters"), dict):
        config = ckpt["hyper_parameters"].get("config")
        return dict(config) if isinstance(config, dict) else None
    return None


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


def check_checkpoint_grid(data_grid: dict, checkpoint: str, allow_pickle: bool = False) -> list:
    """Refuse fine-tuning/evaluating a checkpoint on data of another grid; returns notes."""
    config = project_checkpoint_config(checkpoint, allow_pickle)
    if config is None:  # a released/backbone-only file: it was pretrained at 2 mm
        size = (data_grid or {}).get("voxel_size") or []
        if size and not np.allclose(size, RELEASED_VOXEL_MM, atol=1e-3):
            return [f"{checkpoint} was pretrained on {RELEASED_VOXEL_MM:g} mm MNI data, the data "
                    f"are {list(size)} mm; preprocess with --resample_to {RELEASED_VOXEL_MM:g} to "
                    f"match"]
        return []
    differs = grid_mismatch(data_grid, config.get("data_grid") or {})
    if differs:
        raise ValueError(f"{checkpoint} was trained on another grid than the data ({differs}); "
                         f"preprocess the data like the checkpoint's run (--target_shape, "
                         f"--resample_to)")
    return []


def pretrained_input_scaling(checkpoint: str, allow_pickle: bool = False) -> Optional[str]:
    """The ``--input_scaling_method`` a checkpoint was trained on: its run's, the paper's for a
    released (or pre-``znorm_demean``) file, None for a DeepSpeed folder (no config kept)."""
    from neuromamba.data.scaling import PAPER_SCALING

    if not checkpoint or not Path(checkpoint).is_file():
        return None
    config = project_checkpoint_config(checkpoint, allow_pickle)
    return PAPER_SCALING if config is None else config.get("input_scaling_method", PAPER_SCALING)


def follow_pretrained_input(args) -> list:
    """``--load_model_path`` without ``--input_scaling_method``: fine-tune on the input the
    backbone was pretrained on (the paper's for released checkpoints). Returns notes."""
    if not getattr(args, "input_scaling_follows_checkpoint", False):
        return []
    trained = pretrained_input_scaling(args.load_model_path, getattr(args, "allow_pickle", False))
    if trained is None or trained == args.input_scaling_method:
        return []
    args.input_scaling_method = trained
    return [f"--input_scaling_method {trained} (what --load_model_path was pretrained on)"]


def pretrained_input_notes(scaling_method: str, checkpoint: str, allow_pickle: bool = False) -> list:
    """A note when ``--load_model_path`` was pretrained on another input scaling than the one
    this run was given: legal, but a shift in what the backbone sees, so the user hears of it."""
    trained = pretrained_input_scaling(checkpoint, allow_pickle)
    if trained is None or trained == scaling_method:
        return []
    return [f"{checkpoint} was pretrained on --input_scaling_method {trained}, this run uses "
            f"{scaling_method}; pass --input_scaling_method {trained} to fine-tune on the input "
            f"the backbone learned"]


def apply_test_checkpoint_settings(args) -> list:
    """``--test_only``: evaluate on the checkpoint run's own split file and clip settings
    (unless ``--override_checkpoint_settings``); an explicit ``--split_file`` wins. Returns
    notes on what was taken from the checkpoint."""
    config = project_checkpoint_config(args.test_ckpt_path, getattr(args, "allow_pickle", False))
    if config is None or getattr(args, "override_checkpoint_settings", False):
        return []
    notes = []
    for key in CLIP_SETTINGS:
        if key in config and _differs(getattr(args, key), config[key]):
            notes.append(f"--{key} {_show(config[key])} (the checkpoint's; given {_show(getattr(args, key))})")
            setattr(args, key, list(config[key]) if isinstance(config[key], (list, tuple)) else config[key])
    if not args.split_file:
        split = config.get("split_file_used")
        if split:
            if not Path(split).is_file():
                raise ValueError(f"--test_only: the split file of the checkpoint's run, {split}, is "
                                 f"missing; pass --split_file (the run's splits/split_*.txt)")
            args.split_file = split
            notes.append(f"--split_file {split} (the checkpoint's run)")
    return notes


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a or []) != list(b or [])
    return a != b


def _show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# What a checkpoint's weights and head are made of: resuming with other values cannot work.
MODEL_SETTINGS = ("task", "embed_dim", "depth", "d_state", "headdim", "img_size", "patch_size",
                  "pos_embedding", "clf_head_version", "prompt_tuning", "prompt_len",
                  "freeze_feature_extractor", "downstream_task")


def check_test_task(args, allow_pickle: bool = False) -> None:
    """--test_only: the checkpoint's task must be the one the flags score (a regression model
    must never be scored against class labels)."""
    config = project_checkpoint_config(args.test_ckpt_path, allow_pickle)
    if config is None:
        return
    if config.get("task") != args.task:
        raise ValueError(f"--test_ckpt_path {args.test_ckpt_path} is a {config.get('task')} model "
                         f"(of {config.get('downstream_task')!r}); these flags score {args.task} of "
                         f"{args.downstream_task!r}: give the checkpoint's --downstream_task "
                         f"and --downstream_task_type")


def check_resume(args, allow_pickle: bool = False) -> None:
    """--resume_ckpt_path: the checkpoint must come from a run with the same model flags."""
    config = project_checkpoint_config(args.resume_ckpt_path, allow_pickle)
    if config is None:
        raise ValueError(f"--resume_ckpt_path {args.resume_ckpt_path}: not a checkpoint written by "
                         f"project/main.py (no run settings inside)")
    changed = [f"--{key} {_show(config[key])} (now {_show(getattr(args, key, None))})"
               for key in MODEL_SETTINGS
               if key in config and _differs(getattr(args, key, None), config[key])]
    if changed:
        raise ValueError(f"--resume_ckpt_path {args.resume_ckpt_path} was made with "
                         f"{'; '.join(changed)}; resume with the run's own flags (its args.yaml)")
