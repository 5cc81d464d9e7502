"""Distributed strategies by ``--strategy`` name: the registry and its builders.

Lightning and DeepSpeed are imported only when a strategy is built, so ``neuromamba.cli`` can
take its ``--strategy`` choices from ``STRATEGY_BUILDERS`` without importing them.
"""
from __future__ import annotations

from functools import partial


def deepspeed_config(stage: int, precision: str, offload: bool = False) -> dict:
    """DeepSpeed ZeRO config for the Trainer's ``precision``. --precision bf16 reaches here as
    "32-true" (cli.finalize): fp32 weights and optimizer, bf16 autocast inside the module; no
    DeepSpeed bf16 mode, whose bf16 parameters have overflowed for Mamba users. fp16 keeps
    DeepSpeed's loss-scaled fp16 mode. Gradient accumulation and clipping are filled in by
    Lightning from the Trainer (it refuses them in the config)."""
    zero = {"stage": stage, "contiguous_gradients": True, "overlap_comm": True,
            "allgather_partitions": True, "reduce_scatter": True,
            "allgather_bucket_size": 200_000_000, "reduce_bucket_size": 200_000_000}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        # Save a consolidated 16-bit copy alongside the shards is not needed: checkpoints.read_state_dict
        # consolidates DeepSpeed checkpoint folders itself.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    config = {"zero_allow_untested_optimizer": True, "zero_optimization": zero}
    if precision.startswith("bf16"):
        config["bf16"] = {"enabled": True}
    elif precision.startswith("16"):
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16,
                          "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
    return config


def _deepspeed_strategy_class():
    from pytorch_lightning.strategies import DeepSpeedStrategy
    from pytorch_lightning.trainer.states import TrainerFn

    class NeuroMambaDeepSpeedStrategy(DeepSpeedStrategy):
        """Lightning's DeepSpeedStrategy, except evaluating a ZeRO-3 checkpoint folder.

        Testing (or --test_only) from a ZeRO-3 folder fails inside DeepSpeed: the engine built
        for evaluation holds a ``DeepSpeedZeRoOffload`` that lacks ``_restore_from_bit16_weights``,
        which ``engine.load_checkpoint`` calls when optimizer states are not loaded (DeepSpeed
        issue 7272, open with deepspeed 0.19). There the folder is consolidated and loaded the
        way Lightning loads full weights into ZeRO-3 (gathered layer by layer); training and
        resuming keep DeepSpeed's own loading."""

        def load_checkpoint(self, checkpoint_path, weights_only=None):
            from pathlib import Path

            fitting = self.lightning_module.trainer.state.fn == TrainerFn.FITTING
            self._evaluating_zero3_folder = (self.zero_stage_3 and not fitting
                                             and Path(checkpoint_path).is_dir())
            if not self._evaluating_zero3_folder:
                return super().load_checkpoint(checkpoint_path, weights_only)
            from neuromamba.checkpoints import read_deepspeed_as_lightning

            # The run's own folder, written by this strategy.
            return read_deepspeed_as_lightning(self.broadcast(checkpoint_path), allow_pickle=True)

        def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
            if getattr(self, "_evaluating_zero3_folder", False):
                self.model_to_device()
                self._restore_zero_state(checkpoint, strict=strict)
                return
            super().load_model_state_dict(checkpoint, strict=strict)

    return NeuroMambaDeepSpeedStrategy


def _deepspeed(hardware, stage: int, offload: bool = False, strategy_class=None):
    strategy_class = strategy_class or _deepspeed_strategy_class()
    return strategy_class(config=deepspeed_config(stage, hardware.lightning_precision, offload))


# Seconds a process group waits for every member (rendezvous, collectives) before it gives up with
# an error instead of hanging; NEUROMAMBA_DDP_TIMEOUT_S overrides it.
DDP_TIMEOUT_S = 600


def _ddp(hardware, find_unused: bool = False):
    import os
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy
    seconds = float(os.environ.get("NEUROMAMBA_DDP_TIMEOUT_S", DDP_TIMEOUT_S))
    return DDPStrategy(find_unused_parameters=find_unused, timeout=timedelta(seconds=seconds))


STRATEGY_BUILDERS = {
    "auto": lambda hardware: "auto",
    "ddp": _ddp,
    "ddp_find_unused_parameters_true": partial(_ddp, find_unused=True),
    "deepspeed_stage_1": partial(_deepspeed, stage=1),
    "deepspeed_stage_2": partial(_deepspeed, stage=2),
    "deepspeed_stage_2_offload": partial(_deepspeed, stage=2, offload=True),
    "deepspeed_stage_3": partial(_deepspeed, stage=3),
    "deepspeed_stage_3_offload": partial(_deepspeed, stage=3, offload=True),
}


def build_strategy(hardware):
    """The Lightning strategy of a run_config.Hardware."""
    if hardware.strategy not in STRATEGY_BUILDERS:
        raise ValueError(f"--strategy {hardware.strategy!r}; choose one of {sorted(STRATEGY_BUILDERS)}")
    return STRATEGY_BUILDERS[hardware.strategy](hardware)
