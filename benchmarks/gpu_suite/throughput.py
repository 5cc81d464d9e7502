"""(2) Forward+backward tokens/s of the Base backbone on brain-shaped clips.

Per background-removal rule (``none``: every token; ``batch``: the original's batch-shared
mask; ``packed``: per-sample masks packed with ``seq_idx``), backend (fused, pure) and batch
size: median time of a bf16-autocast forward + next-token loss + backward (no optimizer step)
over the timed steps, after untimed warm-up steps. ``value`` counts the tokens that went
through the blocks; the note gives the step time and clips/s (the number that shows what
background removal saves).
"""
from __future__ import annotations

from .context import SuiteContext
from .env import free_memory, mamba_backend, precision_context, time_steps
from .workload import TrainingStep, brain_clips, build_model

SECTION = "throughput"


def run(ctx: SuiteContext) -> None:
    s = ctx.settings
    dims = s.model(s.throughput_model)
    for removal in s.removals:
        for backend, reason in ctx.backends():
            fields = dict(section=SECTION, backend=backend, precision="bf16",
                          metric="fwd+bwd tokens/s", unit="tokens/s")
            case = (f"{s.throughput_model} C{dims.embed_dim} x{dims.depth} "
                    f"{'x'.join(map(str, s.img_size))} removal={removal}")
            if reason:
                for batch in s.throughput_batches:
                    ctx.unavailable(reason, case=case, batch=batch, **fields)
                continue
            model_box = {}

            def build():
                model_box["model"] = build_model(dims, s.img_size, s.patch_size, removal, s.chunk_size,
                                                 ctx.device, ctx.seed)

            if not ctx.guarded(dict(fields, case=case, batch=None), build):
                continue
            for batch in s.throughput_batches:
                ctx.guarded(dict(fields, case=case, batch=batch),
                            lambda: _measure(ctx, model_box["model"], backend, batch, case, fields))
            model_box.clear()
            free_memory(ctx.device)


def _measure(ctx: SuiteContext, model, backend: str, batch: int, case: str, fields: dict) -> None:
    s = ctx.settings
    clips = brain_clips(s.img_size, batch, s.mask_jitter_voxels, ctx.seed, ctx.device)
    step = TrainingStep(model, clips, lambda: precision_context("bf16", ctx.device), optimizer_step=False)
    with mamba_backend(backend):
        timing = time_steps(step, ctx.device, s.warmup_steps, s.timed_steps)
    kept = step.last.kept_tokens
    total = batch * model.num_tokens
    seconds = timing.median
    ctx.add(case=case, batch=batch, value=kept / seconds,
            note=(f"step {seconds * 1e3:.1f} ms (median of {len(timing.step_seconds)}); "
                  f"{batch / seconds:.2f} clips/s; kept {100.0 * kept / total:.1f}% of {total} tokens"),
            extra={"step_seconds": timing.step_seconds, "kept_tokens": kept, "total_tokens": total,
                   "lengths": step.last.lengths, "clips_per_s": batch / seconds,
                   "loss": step.last.loss},
            **fields)
