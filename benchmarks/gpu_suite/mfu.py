"""(5) Model FLOP utilisation of the Base training step.

MFU = analytic training FLOPs of the step / measured step time / the device's dense bf16 peak.
The FLOPs come from ``neuromamba.models.flops`` for the tokens the step actually kept
(GEMMs and the chunked SSD scan counted as the kernels execute them: full Q x Q blocks;
training = 3 x forward). The step is fused, bf16 autocast, forward + backward + AdamW.
"""
from __future__ import annotations

from .context import SuiteContext
from .env import free_memory, mamba_backend, precision_context, time_steps
from .workload import TrainingStep, brain_clips, build_model

SECTION = "mfu"


def step_train_flops(dims, img_size, patch_size, chunk_size: int, removal: str, lengths) -> dict:
    """{'total', 'gemm', 'scan', 'other'} training FLOPs of one step with per-sample ``lengths``."""
    from neuromamba.models.flops import (TRAIN_TO_FORWARD, FMambaFlopsConfig, batch_forward_flops,
                                           group_terms, packed_forward_flops)

    cfg = FMambaFlopsConfig(embed_dim=dims.embed_dim, depth=dims.depth, d_state=dims.d_state,
                            headdim=dims.headdim, img_size=tuple(img_size), patch_size=tuple(patch_size),
                            chunk_size=chunk_size, pretraining=True)
    counter = packed_forward_flops if removal == "packed" else batch_forward_flops
    terms = counter(cfg, lengths)
    groups = {k: TRAIN_TO_FORWARD * v for k, v in group_terms(terms).items()}
    groups["total"] = TRAIN_TO_FORWARD * sum(terms.values())
    return groups


def run(ctx: SuiteContext) -> None:
    s = ctx.settings
    dims = s.model(s.mfu_model)
    backend = "pure" if ctx.dry_run else "fused"
    for removal in s.mfu_removals:
        case = f"{s.mfu_model} C{dims.embed_dim} x{dims.depth} removal={removal}"
        fields = dict(section=SECTION, case=case, backend=backend, precision="bf16", batch=s.mfu_batch)
        reason = ctx.info.fused_reason if backend == "fused" else None
        if reason:
            for metric, unit in (("achieved TFLOP/s", "TFLOP/s"), ("MFU", "%")):
                ctx.unavailable(reason, metric=metric, unit=unit, **fields)
            continue
        ctx.guarded(dict(fields, metric="achieved TFLOP/s"), lambda: _measure(ctx, dims, removal, backend, fields))
        free_memory(ctx.device)


def _measure(ctx: SuiteContext, dims, removal: str, backend: str, fields: dict) -> None:
    s = ctx.settings
    model = build_model(dims, s.img_size, s.patch_size, removal, s.chunk_size, ctx.device, ctx.seed)
    clips = brain_clips(s.img_size, s.mfu_batch, s.mask_jitter_voxels, ctx.seed, ctx.device)
    step = TrainingStep(model, clips, lambda: precision_context("bf16", ctx.device), optimizer_step=True)
    with mamba_backend(backend):
        timing = time_steps(step, ctx.device, s.warmup_steps, s.timed_steps)
    flops = step_train_flops(dims, s.img_size, s.patch_size, s.chunk_size, removal, step.last.lengths)
    seconds = timing.median
    achieved = flops["total"] / seconds / 1e12
    share = {k: 100.0 * flops[k] / flops["total"] for k in ("gemm", "scan", "other")}
    basis = (f"{flops['total']:.3e} FLOP/step (analytic, train = 3 x fwd; GEMM {share['gemm']:.0f}%, "
             f"scan {share['scan']:.0f}%, other {share['other']:.0f}%); step {seconds * 1e3:.1f} ms")
    extra = {"train_flops": flops, "step_seconds": timing.step_seconds, "lengths": step.last.lengths}
    ctx.add(metric="achieved TFLOP/s", value=achieved, unit="TFLOP/s", note=basis, extra=extra, **fields)
    if ctx.peak_tflops is None:
        ctx.add(metric="MFU", unit="%", status="skipped",
                note=f"unknown bf16 peak for {ctx.info.name!r}: pass --peak_tflops", **fields)
        return
    ctx.add(metric="MFU", value=100.0 * achieved / ctx.peak_tflops, unit="%",
            note=f"peak {ctx.peak_tflops:g} TFLOP/s ({ctx.peak_source})", extra=extra, **fields)
