"""How much memory a step will take, how much there is, and the batch that fits.

Why measure rather than count: the activation memory of a Mamba2 block depends on which
tensors autograd keeps, which differs between the pure-PyTorch scan, the fused kernels and the
precision. So :func:`activation_profile` builds the model's own block at its real width on a
small probe clip (a few hundred tokens, well under a second) and records, through
``torch.autograd.graph.saved_tensors_hooks``, the bytes autograd keeps per token: once for the
embedding and loss, once per block. Every term is linear in the tokens, so the figure scales to
any clip size. The peak adds the optimizer state and a transient share measured by
``benchmarks/memory_estimate.py`` (backward works on one block's gradients at a time).

Used by ``main.py`` (a training step, before the first one) and by ``predict``, ``embed`` and
``attribute`` (the internal batch from the free memory of the device).
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

GiB = float(2**30)
# Backward's transient buffers (one block's gradients, the scan's chunk states) on top of what
# autograd keeps: 1.16x at Small 48^3x20 on CPU; benchmarks/memory_estimate.py checks the rest.
TRANSIENT_FACTOR = 1.2
# Without autograd, only one block's working set is alive at a time; its saved tensors are a
# fair measure of that set, plus the residual stream and the input.
INFERENCE_BLOCKS_ALIVE = 1.5
# Probe clip in patches (D, H, W, T): 512 tokens, two scan chunks of 256.
PROBE_PATCHES = (8, 8, 4, 2)
# Bytes per parameter: fp32 weights + gradients + AdamW's two moments.
TRAIN_BYTES_PER_PARAM = 16


def human(nbytes: float) -> str:
    """``1.25 GiB`` / ``310 MiB``."""
    return f"{nbytes / GiB:.2f} GiB" if nbytes >= 0.5 * GiB else f"{nbytes / 2**20:.0f} MiB"


@dataclass(frozen=True)
class ActivationProfile:
    """Bytes autograd keeps per token: once per clip (embedding, loss) and per block."""

    fixed_per_token: float
    per_block_per_token: float
    depth: int

    def per_token(self, grad: bool = True) -> float:
        if grad:
            return self.fixed_per_token + self.depth * self.per_block_per_token
        return self.fixed_per_token + INFERENCE_BLOCKS_ALIVE * self.per_block_per_token


@dataclass(frozen=True)
class MemoryEstimate:
    """The peak a step adds to the process, by part (bytes)."""

    parts: Dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    batch: int = 1

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def describe(self) -> str:
        shown = ", ".join(f"{name} {human(value)}" for name, value in self.parts.items() if value)
        return f"{human(self.total)} ({shown}; {self.tokens:,} tokens per clip, batch {self.batch})"


def _autocast(precision: Optional[str], device: str):
    if precision and ("bf16" in str(precision)):
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision and str(precision).startswith("16"):
        return torch.autocast(device_type=device, dtype=torch.float16)
    return nullcontext()


def _saved_bytes(model, x, precision, device) -> int:
    """Bytes of the distinct storages autograd keeps for one forward and loss."""
    storages: Dict[Tuple[int, int], int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[(storage.data_ptr(), tensor.device.index or 0)] = storage.nbytes()
        return tensor

    x = x.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(precision, device):
        out = model(x)
        loss = out.features.float().pow(2).mean()
    del out, loss
    return sum(storages.values())


def activation_profile(embed_dim: int, depth: int, d_state: int, headdim: int,
                       patch_size: Sequence[int], precision: Optional[str] = None,
                       pos_embedding: str = "nerf") -> ActivationProfile:
    """Measure the model's bytes kept per token on a probe clip (CPU, pure-PyTorch path)."""
    from neuromamba.models import FMamba

    patch = tuple(int(v) for v in patch_size)
    img = tuple(p * n for p, n in zip(patch, PROBE_PATCHES))
    tokens = math.prod(PROBE_PATCHES)
    measured = []
    generator_state = torch.random.get_rng_state()
    try:
        for blocks in (1, 2):
            torch.manual_seed(0)
            model = FMamba(embed_dim=embed_dim, depth=blocks, d_state=d_state, headdim=headdim,
                           img_size=img, patch_size=patch, pos_embedding=pos_embedding,
                           pretraining=False)
            measured.append(_saved_bytes(model, torch.randn(1, 1, *img), precision, "cpu"))
    finally:
        torch.random.set_rng_state(generator_state)
    per_block = max(measured[1] - measured[0], 0) / tokens
    fixed = max(measured[0] / tokens - per_block, 0.0)
    return ActivationProfile(fixed, per_block, int(depth))


def estimate_step(profile: ActivationProfile, tokens: int, batch: int, params: int,
                  voxels_per_clip: int, kind: str = "train") -> MemoryEstimate:
    """Peak memory a step adds: ``kind`` is ``train`` (forward, backward, AdamW step),
    ``input_grad`` (forward and backward to the input, weights frozen: attribution) or
    ``inference`` (no autograd)."""
    if kind not in ("train", "input_grad", "inference"):
        raise ValueError(f"unknown step kind {kind!r}")
    grad = kind != "inference"
    activations = profile.per_token(grad) * tokens * batch * (TRANSIENT_FACTOR if grad else 1.0)
    parts = {
        "activations": activations,
        "weights+optimizer": params * (TRAIN_BYTES_PER_PARAM if kind == "train" else 4),
        # the clip, its patches and (with autograd) the input gradient
        "input": voxels_per_clip * batch * 4 * (3 if grad else 2),
    }
    return MemoryEstimate(parts, int(tokens), int(batch))


def available_memory(device: str = "cpu") -> Tuple[float, str]:
    """(bytes free, where the figure comes from) on ``device``: CUDA's free memory, or the
    host's available memory, lowered to a cgroup (container, SLURM job) limit if there is one."""
    device = str(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)
        return float(free), f"free on {device}"
    import psutil

    free, source = float(psutil.virtual_memory().available), "available host memory"
    limit = _cgroup_room()
    if limit is not None and limit < free:
        free, source = limit, "room under the cgroup memory limit"
    return free, source


def _cgroup_room() -> Optional[float]:
    """Limit minus usage of this process's cgroup (v2, then v1), or None when unlimited."""
    pairs = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
             ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    for limit_file, usage_file in pairs:
        try:
            raw = open(limit_file).read().strip()
            if raw == "max":
                return None
            limit, usage = float(raw), float(open(usage_file).read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 2**60:  # v1's "unlimited"
            return None
        return max(limit - usage, 0.0)
    return None


def peak_resident_bytes() -> float:
    """This process's peak resident size so far (Linux/macOS), 0 where unknown."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if os.uname().sysname == "Darwin" else peak * 1024)


def fitting_batch(per_item: float, fixed: float, free: float, wanted: int, headroom: float = 0.8) -> int:
    """The largest batch up to ``wanted`` whose estimate fits ``headroom`` of ``free`` (at least 1)."""
    room = free * headroom - fixed
    if per_item <= 0:
        return max(1, wanted)
    return int(max(1, min(wanted, room // per_item)))


def model_profile(model, precision: Optional[str] = None) -> ActivationProfile:
    """:func:`activation_profile` of a built FMamba (its width, blocks and patch)."""
    mixer = model.mamba_layers[0][1]
    return activation_profile(model.embed_dim, model.depth, mixer.d_state, mixer.headdim,
                              model.patch_size, precision)


def plan_batch(model, kind: str, requested: Optional[int], wanted: int, device: str, flag: str,
               what: str = "clips") -> Tuple[int, str]:
    """The internal batch of an analysis tool and the line that says why.

    ``requested`` (the user's flag) wins; otherwise the largest batch up to ``wanted`` whose
    estimate fits 80% of the free memory of ``device``. The line gives the expected peak of the
    process, so a memory death is never silent."""
    tokens, voxels = model.num_tokens, math.prod(model.img_size)
    params = sum(p.numel() for p in model.parameters())
    one = estimate_step(model_profile(model), tokens, 1, params, voxels, kind)
    fixed = one.parts["weights+optimizer"]
    per_item = one.total - fixed
    free, source = available_memory(device)
    batch = int(requested) if requested else fitting_batch(per_item, fixed, free, wanted)
    now = (torch.cuda.memory_allocated() if str(device).startswith("cuda") and torch.cuda.is_available()
           else peak_resident_bytes())
    need = fixed + per_item * batch
    chosen = f"{flag} {batch}" if requested else f"{batch} {what} per pass (of {wanted}; {flag} sets it)"
    line = (f"memory: {chosen}, ~{human(per_item)} each at {tokens:,} tokens; expected peak "
            f"~{human(now + need)} with {human(free)} {source}")
    if need > free:
        line += f"; this exceeds it, lower {flag}" if requested else \
            "; even one does not fit, so expect the process to be killed for memory"
    return batch, line
