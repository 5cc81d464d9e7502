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


def _deepspeed(args, stage: int, offload: bool = False):
    from pytorch_lightning.strategies import DeepSpeedStrategy
    return DeepSpeedStrategy(config=deepspeed_config(stage, args.lightning_precision, offload))


# Seconds a process group waits for every member (rendezvous, collectives) before it gives up with
# an error instead of hanging; NEUROMAMBA_DDP_TIMEOUT_S overrides it.
DDP_TIMEOUT_S = 600


def _ddp(args, find_unused: bool = False):
    import os
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy
    seconds = float(os.environ.get("NEUROMAMBA_DDP_TIMEOUT_S", DDP_TIMEOUT_S))
    return DDPStrategy(find_unused_parameters=find_unused, timeout=timedelta(seconds=seconds))


STRATEGY_BUILDERS = {
    "auto": lambda args: "auto",
    "ddp": _ddp,
    "ddp_find_unused_parameters_true": partial(_ddp, find_unused=True),
    "deepspeed_stage_1": partial(_deepspeed, stage=1),
    "deepspeed_stage_2": partial(_deepspeed, stage=2),
    "deepspeed_stage_2_offload": partial(_deepspeed, stage=2, offload=True),
    "deepspeed_stage_3": partial(_deepspeed, stage=3),
    "deepspeed_stage_3_offload": partial(_deepspeed, stage=3, offload=True),
}


def build_strategy(args):
    if args.strategy not in STRATEGY_BUILDERS:
        raise ValueError(f"--strategy {args.strategy!r}; choose one of {sorted(STRATEGY_BUILDERS)}")
    return STRATEGY_BUILDERS[args.strategy](args)
