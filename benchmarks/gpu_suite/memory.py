"""(3) Peak GPU memory of one training step at the paper's micro-batch (3).

Two full steps (forward, next-token loss, backward, AdamW step; the second one holds the
optimizer state the first created) of each model at bf16 autocast; ``value`` is
``torch.cuda.max_memory_allocated`` over both, checked against the budget (24 GiB: the
original README promises its smoke test fits a 24 GB card). The note adds the allocator's
peak reserved memory, which is what the card must actually hold (plus the CUDA context).
In ``--dry-run`` the number is the CPU process's peak RSS, a stand-in that only exercises
the pipeline.
"""
from __future__ import annotations

from .context import SuiteContext
from .env import free_memory, mamba_backend, peak_memory_gib, precision_context, reset_peak_memory
from .results import checked
from .workload import TrainingStep, brain_clips, build_model

SECTION = "memory"
STEPS = 2


def run(ctx: SuiteContext) -> None:
    s = ctx.settings
    for model_name in s.memory_models:
        dims = s.model(model_name)
        for removal in s.memory_removals:
            for backend, reason in ctx.backends():
                case = f"{model_name} C{dims.embed_dim} x{dims.depth} removal={removal}"
                fields = dict(section=SECTION, case=case, backend=backend, precision="bf16",
                              batch=s.memory_batch, metric="peak allocated", unit="GiB",
                              limit=f"<= {s.memory_budget_gib:g} GiB")
                if reason:
                    ctx.unavailable(reason, **fields)
                    continue
                ctx.guarded(fields, lambda: _measure(ctx, dims, removal, backend, fields))
                free_memory(ctx.device)


def _measure(ctx: SuiteContext, dims, removal: str, backend: str, fields: dict) -> None:
    s = ctx.settings
    free_memory(ctx.device)
    reset_peak_memory(ctx.device)
    model = build_model(dims, s.img_size, s.patch_size, removal, s.chunk_size, ctx.device, ctx.seed)
    clips = brain_clips(s.img_size, s.memory_batch, s.mask_jitter_voxels, ctx.seed, ctx.device)
    step = TrainingStep(model, clips, lambda: precision_context("bf16", ctx.device), optimizer_step=True)
    with mamba_backend(backend):
        for _ in range(STEPS):
            step()
    peak = peak_memory_gib(ctx.device)
    what = f"GPU, reserved {peak['reserved']:.2f} GiB" if ctx.info.is_cuda else "CPU peak RSS (dry-run stand-in)"
    note = f"{what}; kept {step.last.kept_tokens} tokens; loss {step.last.loss:.4f}"
    ctx.add(value=peak["allocated"], status=checked(peak["allocated"], s.memory_budget_gib), note=note,
            extra={"reserved_gib": peak["reserved"], "kept_tokens": step.last.kept_tokens,
                   "lengths": step.last.lengths}, **fields)
