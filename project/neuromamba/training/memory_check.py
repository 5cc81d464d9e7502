"""Before the first step: will a training step fit in memory?

A memory death is silent (the kernel's OOM killer leaves exit 137 and no line), so the run
estimates its step's peak first (:mod:`neuromamba.memory`), prints it, warns with a batch size
that fits when it exceeds the free memory, and refuses beyond twice the free memory unless
``--ignore_memory_estimate`` is given.
"""
from __future__ import annotations

import math
import warnings

import torch

from neuromamba.console import NeuroMambaWarning
from neuromamba.memory import available_memory, human, estimate_step, fitting_batch, model_profile

REFUSE_ABOVE = 2.0  # x the free memory


def tokens_per_clip(model, dataset, batch: int) -> int:
    """Tokens one clip brings into the blocks: all of them, or with background removal the
    brain tokens of the first ``batch`` training clips' stored masks (their union for the
    batch-wide rule, their mean per clip for the per-sample rule)."""
    removal = getattr(model, "background_removal", "none")
    if removal == "none" or dataset is None or len(dataset) == 0:
        return int(model.num_tokens)
    from neuromamba.models.embedding import brain_tokens_from_voxels

    masks = []
    for i in range(min(batch, len(dataset))):
        item = dataset[i]
        if "brain_mask" not in item:
            return int(model.num_tokens)
        masks.append(torch.as_tensor(item["brain_mask"]))
    kept = brain_tokens_from_voxels(torch.stack(masks), model.img_size, model.patch_size)
    if removal == "batch":
        return int(kept.any(dim=0).sum())
    return int(round(float(kept.sum(dim=1).float().mean())))


def same_effective_batch(batch: int, accumulation: int, fits: int) -> str:
    """Advice for a batch that does not fit: the largest batch that fits and divides the
    current one, with the accumulation that keeps the effective batch exactly (10 with 3
    fitting: 2 x 5, not 3 x 3 = 9)."""
    smaller = max(d for d in range(1, min(fits, batch) + 1) if batch % d == 0)
    steps = accumulation * (batch // smaller)
    return (f"--batch_size {smaller} fits; with --gradient_accumulation_steps {steps} the effective "
            f"batch stays {batch * accumulation}")


def check_step_memory(hardware, options, model, num_params: int, dataset=None, compare: bool = True) -> str:
    """The one line announcing the estimate for ``model`` (an FMamba) with ``num_params``
    trainable and frozen parameters in all, on the run's hardware and batches
    (run_config.Hardware, TrainerOptions); warns or raises as the module docstring says
    (``compare=False``: the estimate only, for a machine other than this one)."""
    device = "cuda" if hardware.wants_gpu and torch.cuda.is_available() else "cpu"
    precision = hardware.autocast_dtype or hardware.precision
    batch = options.batch_size
    profile = model_profile(model, "bf16" if "bf" in str(precision) else None)
    if model.grad_checkpointing:
        # Only each block's input stays; one block's activations are rebuilt at a time.
        profile = type(profile)(profile.fixed_per_token + model.depth * model.embed_dim * 4,
                                profile.per_block_per_token, 1)
    tokens = tokens_per_clip(model, dataset, batch)
    voxels = math.prod(model.img_size)
    params = int(num_params)
    share = hardware.processes_sharing_memory
    estimate = estimate_step(profile, tokens, batch, params, voxels, "train")
    need = estimate.total * share
    line = (f"memory: a training step needs ~{estimate.describe()}"
            f"{f' x {share} processes' if share > 1 else ''}")
    if not compare:
        return line
    free, source = available_memory(device)
    line += f"; {human(free)} {source}"
    if need <= free or hardware.ignore_memory_estimate:
        return line
    one = estimate_step(profile, tokens, 1, params, voxels, "train")
    fixed = one.parts["weights+optimizer"]
    fits = fitting_batch(one.total - fixed, fixed, free / share, batch)
    advice = (same_effective_batch(batch, options.gradient_accumulation_steps, fits) if fits < batch
              else "even --batch_size 1 does not fit; try --grad_checkpointing or a smaller --img_size")
    if need > REFUSE_ABOVE * free:
        raise ValueError(f"{line}: more than {REFUSE_ABOVE:g}x what is free, so the run would be killed "
                         f"for memory; {advice}, or --ignore_memory_estimate to start anyway")
    warnings.warn(f"{line}: more than is free; {advice}", NeuroMambaWarning, stacklevel=2)
    return line
