"""Experiment loggers added by ``--loggername`` (metrics.csv is always written, see trainer.py).

Lightning's logger classes are imported only when a logger is built, so ``neuromamba.cli`` can
take its ``--loggername`` choices from ``EXTRA_LOGGERS`` without importing Lightning.
"""
from __future__ import annotations

import os
from pathlib import Path

from neuromamba.fileio import read_yaml_mapping


def _wandb_logger(options, run_dir: Path):
    """``options``: the run's run_config.TrainerOptions."""
    from pytorch_lightning.loggers import WandbLogger

    settings = read_yaml_mapping(options.wandb_config, "--wandb_config") if options.wandb_config else {}
    # Without credentials wandb runs offline (sync later with `wandb sync`), never prompts.
    if not os.environ.get("WANDB_API_KEY") and not settings.get("api_key"):
        os.environ.setdefault("WANDB_MODE", settings.get("mode", "offline"))
    elif settings.get("mode"):
        os.environ.setdefault("WANDB_MODE", settings["mode"])
    if settings.get("api_key"):
        os.environ.setdefault("WANDB_API_KEY", str(settings["api_key"]))
    return WandbLogger(project=settings.get("project", options.project_name), entity=settings.get("entity"),
                       name=run_dir.name, save_dir=str(run_dir), tags=settings.get("tags"),
                       group=settings.get("group"))


def _tensorboard_logger(options, run_dir: Path):
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")


# --loggername -> builder of the extra logger (None: only metrics.csv).
EXTRA_LOGGERS = {
    "wandb": _wandb_logger,
    "tensorboard": _tensorboard_logger,
    "csv": None,
    "none": None,
}
