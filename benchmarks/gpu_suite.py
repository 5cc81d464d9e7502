"""NeuroMamba GPU suite: one call on a CUDA machine, one results table.

Sections, in run order (each case is a row of results.md / .csv / .json, rewritten after every
row, so a call stopped at its limit still returns what it measured):

* ``parity``: fused vs pure-PyTorch Mamba2 outputs and all gradients, Base and Medium layers,
  plain and packed ``seq_idx``, fp32 with TF32 off (<= 1e-3 relative) and bf16 (<= 2e-2);
* ``throughput``: fwd+bwd tokens/s and step time of the Base backbone at 96^3 x 20, batch 3,
  fused and pure, background removal none / batch / packed;
* ``memory``: peak GPU memory of training steps (AdamW included) at batch 3, Small/Base/Medium,
  against a 24 GiB card;
* ``training``: ``project/main.py`` pretraining under DeepSpeed ZeRO-1 bf16 (loss decreasing,
  fp32 master weights), then a fine-tune from its checkpoint folder that follows its input spec;
* ``mfu``: analytic training FLOPs of the Base step (``neuromamba.models.flops``) / step time /
  the device's dense bf16 peak.

    python benchmarks/gpu_suite.py --out results            # on the GPU (gpu_suite.sh installs)
    python benchmarks/gpu_suite.py --dry-run --out /tmp/r   # anywhere: tiny shapes on CPU

Exit status 0 when no row failed or errored, 1 otherwise, 2 for bad flags.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("section", "case", "backend", "precision", "batch", "metric", "value", "unit", "limit",
           "status", "note")
STATUSES = ("pass", "fail", "ok", "error", "skipped")
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("A100", 312.0))  # dense, no sparsity; first substring match wins
PARITY_LIMITS = {"fp32": 1e-3, "bf16": 2e-2}
GIB = 1024 ** 3


# --------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Sizes:
    """The paper's shapes; the dry-run shrinks every one of them, not the cases."""

    img_size: tuple = (96, 96, 96, 20)
    patch_size: tuple = (6, 6, 6, 2)
    chunk_size: int = 256
    models: Dict[str, tuple] = field(default_factory=lambda: {
        "small": (128, 12, 32, 128), "base": (192, 12, 48, 192), "medium": (256, 12, 64, 256)})
    parity_models: tuple = ("base", "medium")
    parity_seqlen: int = 2000  # not a multiple of the chunk: the padded last chunk is exercised
    parity_packed: tuple = (700, 1055, 245)
    batch: int = 3  # the paper's micro-batch
    warmup: int = 3
    steps: int = 10
    train_steps: int = 50
    finetune_steps: int = 20
    strategy: str = "deepspeed_stage_1"
    accelerator: str = "gpu"
    subjects: int = 20


DRY = Sizes(img_size=(24, 24, 24, 4), chunk_size=32,
            models={"small": (16, 2, 4, 16), "base": (32, 2, 8, 32), "medium": (48, 2, 12, 48)},
            parity_seqlen=100, parity_packed=(41, 37, 22), batch=2, warmup=1, steps=2,
            train_steps=6, finetune_steps=3, strategy="auto", accelerator="cpu", subjects=6)
BUDGETS_S = {"parity": 60, "throughput": 90, "memory": 45, "training": 170, "mfu": 40}


# --------------------------------------------------------------------------------- results
class Results:
    """Rows of :data:`COLUMNS`; all three files rewritten (atomically) after each row."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.rows = Path(out), meta, []
        self.out.mkdir(parents=True, exist_ok=True)

    def add(self, section, case, metric, value=None, unit="", backend="", precision="", batch=None,
            limit="", status="ok", note="", **extra) -> dict:
        if status not in STATUSES:
            raise ValueError(f"row status {status!r} is not one of {STATUSES}")
        row = dict(section=section, case=case, backend=backend, precision=precision, batch=batch,
                   metric=metric, value=value, unit=unit, limit=limit, status=status, note=note,
                   extra=extra)
        self.rows.append(row)
        self.write()
        return row

    def write(self) -> None:
        for name, text in (("results.md", self.markdown()), ("results.csv", self.csv()),
                           ("results.json", json.dumps({"meta": self.meta, "rows": [
                               {k: _json_safe(v) for k, v in row.items()} for row in self.rows]},
                               indent=2, default=str))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in self.rows:
            cells = [fmt(row[c]) if c in ("value", "batch") else str(row[c]) for c in COLUMNS]
            lines.append("| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([["" if row[c] is None else row[c] for c in COLUMNS] for row in self.rows])
        return buf.getvalue()

    def failed(self) -> int:
        return sum(row["status"] in ("fail", "error") for row in self.rows)


def _json_safe(value):
    """JSON has no NaN/inf: they become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3e}" if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3) else f"{value:.4g}"
    return str(value)


def checked(value, limit: float) -> str:
    return "pass" if value is not None and math.isfinite(value) and value <= limit else "fail"


# --------------------------------------------------------------------------------- context
@dataclass
class Context:
    sizes: Sizes
    results: Results
    device: torch.device
    name: str
    fused_reason: Optional[str]  # None: the fused kernels run here
    work: Path
    dry_run: bool
    peak_tflops: Optional[float]

    def backends(self):
        return [("fused", self.fused_reason), ("pure", None)]

    def guarded(self, fields: dict, body: Callable[[], None]) -> None:
        """Run a case; any exception becomes one 'error' row (out of memory named) and the suite
        goes on."""
        try:
            body()
        except Exception as err:  # every failure is a row
            oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
            text = " ".join(f"{type(err).__name__}: {err}".split())[:400]
            self.results.add(**{"metric": "run", **fields}, status="error",
                             note=("out of memory: " if oom else "") + text)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def detect(dry_run: bool):
    if dry_run:
        return torch.device("cpu"), "CPU (dry-run)", "skipped: no CUDA (dry-run)"
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is visible; use --dry-run on a machine without a GPU")
    from neuromamba.models.mamba2 import load_fused_ops

    ops = load_fused_ops()
    return torch.device("cuda"), torch.cuda.get_device_name(), ops if isinstance(ops, str) else None


@contextlib.contextmanager
def backend(name: str):
    """Mamba2 reads NEUROMAMBA_MAMBA_BACKEND on every call."""
    before = os.environ.get("NEUROMAMBA_MAMBA_BACKEND")
    os.environ["NEUROMAMBA_MAMBA_BACKEND"] = name
    try:
        yield
    finally:
        os.environ.pop("NEUROMAMBA_MAMBA_BACKEND", None) if before is None else \
            os.environ.__setitem__("NEUROMAMBA_MAMBA_BACKEND", before)


@contextlib.contextmanager
def precision(name: str, device: torch.device):
    """fp32: TF32 off in cuBLAS/cuDNN and in Triton's fp32 tl.dot; bf16: autocast, fp32 weights."""
    if name == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             os.environ.get("TRITON_F32_DEFAULT"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    os.environ["TRITON_F32_DEFAULT"] = "ieee"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        os.environ.pop("TRITON_F32_DEFAULT", None) if saved[2] is None else \
            os.environ.__setitem__("TRITON_F32_DEFAULT", saved[2])


def time_steps(step: Callable[[], object], device, warmup: int, steps: int) -> List[float]:
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


# --------------------------------------------------------------------------------- workload
def brain_clips(sizes: Sizes, batch: int, device, seed: int = 0) -> torch.Tensor:
    """(batch, 1, D, H, W, T) clips on nilearn's MNI152 brain (each sample shifted up to 2
    voxels), background the clip minimum: what znorm_minback data look like."""
    import numpy as np

    from neuromamba.analysis.brain_masks import jittered_batch, mni152_voxel_mask

    masks = np.stack(jittered_batch(mni152_voxel_mask(sizes.img_size[:3]), batch, 2, seed))
    x = torch.randn((batch, 1, *sizes.img_size), generator=torch.Generator().manual_seed(seed))
    brain = torch.from_numpy(masks).view(batch, 1, *sizes.img_size[:3], 1)
    return torch.where(brain, x, x.amin() - 0.5).to(device)


def build_backbone(sizes: Sizes, model: str, removal: str, device, seed: int = 0):
    from neuromamba.models.fmamba import FMamba

    torch.manual_seed(seed)
    c, depth, d_state, headdim = sizes.models[model]
    return FMamba(embed_dim=c, depth=depth, d_state=d_state, headdim=headdim, img_size=sizes.img_size,
                  patch_size=sizes.patch_size, background_removal=removal, chunk_size=sizes.chunk_size,
                  pretraining=True).to(device)


def training_step(model, clips, device, optimizer=None):
    """bf16 forward + next-token loss + backward (+ AdamW); returns the per-sample kept tokens."""
    def step():
        with precision("bf16", device):
            out = model(clips)
            loss = model.next_token_loss(out)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
        step.lengths = [int(v) for v in out.lengths.tolist()]
    return step


# --------------------------------------------------------------------------------- sections
def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def parity(ctx: Context) -> None:
    from neuromamba.models.mamba2 import Mamba2

    s = ctx.sizes
    for model in s.parity_models:
        c, _, d_state, headdim = s.models[model]
        for packing in ("plain", "seq_idx"):
            g = torch.Generator().manual_seed(1)
            lengths = torch.tensor(s.parity_packed)
            shape = (1, int(lengths.sum()), c) if packing == "seq_idx" else (2, s.parity_seqlen, c)
            seq_idx = (torch.repeat_interleave(torch.arange(len(lengths)), lengths).int()[None].to(ctx.device)
                       if packing == "seq_idx" else None)
            u, cotangent = (torch.randn(shape, generator=g).to(ctx.device) for _ in range(2))
            torch.manual_seed(0)
            layer = Mamba2(c, d_state=d_state, headdim=headdim, chunk_size=s.chunk_size).to(ctx.device)

            def run(name, prec, chunk=s.chunk_size):
                layer.zero_grad(set_to_none=True)
                layer.chunk_size = chunk
                x = u.clone().requires_grad_(True)
                with backend(name), precision(prec, ctx.device):
                    y = layer(x, seq_idx=seq_idx)
                (y.float() * cotangent).sum().backward()
                return [y.float(), x.grad] + [p.grad.float() for p in layer.parameters()]

            case = f"{model} d{c}/N{d_state}/P{headdim} {packing} L={shape[1]}"
            # Without the kernels (the dry-run) the candidate is the pure path at half the chunk:
            # the chunked scan must not depend on its chunking, and the rows hold real numbers.
            candidate = "fused" if not ctx.fused_reason else "pure-chunk/2"
            for prec, limit in PARITY_LIMITS.items():
                fields = dict(section="parity", case=case, backend=candidate, precision=prec,
                              batch=shape[0], limit=f"<= {limit:g}")
                if ctx.fused_reason and not ctx.dry_run:
                    ctx.results.add(metric="rel err output+grads", unit="rel", status="error",
                                    note=ctx.fused_reason, **fields)

                def compare(prec=prec, limit=limit, fields=fields):
                    ref = run("pure", prec)
                    got = run("fused", prec) if candidate == "fused" else run("pure", prec, s.chunk_size // 2)
                    names = ["output", "grad input"] + [n for n, _ in layer.named_parameters()]
                    errors = {n: relative_error(a, b) for n, a, b in zip(names, got, ref)}
                    worst = max(names[2:], key=errors.get)
                    every = relative_error(torch.cat([g.flatten() for g in got[2:]]),
                                           torch.cat([g.flatten() for g in ref[2:]]))
                    for metric, err in (("output", errors["output"]), ("grad input", errors["grad input"]),
                                        ("grad params (all)", every)):
                        ctx.results.add(metric=f"rel err {metric}", value=err, unit="rel",
                                        status=checked(err, limit), **fields)
                    # In bf16 the small per-head vectors' gradients (dt_bias, A_log, D) are sums of
                    # many cancelling terms: rounding alone moves them by percents. Checked in fp32.
                    bf16 = prec == "bf16"
                    ctx.results.add(metric=f"rel err grad params (worst: {worst})", value=errors[worst],
                                    unit="rel", **{**fields, "limit": "" if bf16 else fields["limit"]},
                                    status="ok" if bf16 else checked(errors[worst], limit),
                                    note="reported, not checked in bf16" if bf16 else "")
                ctx.guarded(fields, compare)


def throughput(ctx: Context) -> None:
    s = ctx.sizes
    for removal in ("none", "batch", "packed"):
        for name, reason in ctx.backends():
            fields = dict(section="throughput", case=f"base {'x'.join(map(str, s.img_size))} removal={removal}",
                          backend=name, precision="bf16", batch=s.batch, metric="fwd+bwd tokens/s",
                          unit="tokens/s")
            if reason:
                ctx.results.add(status="skipped" if ctx.dry_run else "error", note=reason, **fields)
                continue

            def measure(name=name, removal=removal, fields=fields):
                model = build_backbone(s, "base", removal, ctx.device)
                step = training_step(model, brain_clips(s, s.batch, ctx.device), ctx.device)
                with backend(name):
                    seconds = statistics.median(time_steps(step, ctx.device, s.warmup, s.steps))
                kept, total = sum(step.lengths), s.batch * model.num_tokens
                ctx.results.add(value=kept / seconds, note=f"step {seconds * 1e3:.1f} ms; kept "
                                f"{100 * kept / total:.1f}% of {total} tokens", step_s=seconds,
                                kept_fraction=kept / total, **fields)
            ctx.guarded(fields, measure)


def memory(ctx: Context) -> None:
    s = ctx.sizes
    for model_name in ("small", "base", "medium"):
        for removal in ("none", "batch"):
            fields = dict(section="memory", case=f"{model_name} removal={removal}",
                          backend="pure" if ctx.fused_reason else "fused", precision="bf16",
                          batch=s.batch, metric="peak allocated", unit="GiB", limit="<= 24 GiB")

            def measure(model_name=model_name, removal=removal, fields=fields):
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                model = build_backbone(s, model_name, removal, ctx.device)
                step = training_step(model, brain_clips(s, s.batch, ctx.device), ctx.device,
                                     torch.optim.AdamW(model.parameters(), lr=1e-4))
                with backend(fields["backend"]):
                    step(), step()  # the second step holds the optimizer state
                if ctx.device.type == "cuda":
                    peak, note = torch.cuda.max_memory_allocated() / GIB, \
                        f"reserved {torch.cuda.max_memory_reserved() / GIB:.2f} GiB"
                else:
                    import resource

                    peak, note = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, \
                        "CPU peak RSS (dry-run stand-in)"
                ctx.results.add(value=peak, status=checked(peak, 24.0), note=note, **fields)
            ctx.guarded(fields, measure)


def mfu(ctx: Context) -> None:
    from neuromamba.models.flops import (TRAIN_TO_FORWARD, FMambaFlopsConfig, batch_forward_flops,
                                         packed_forward_flops)

    s = ctx.sizes
    c, depth, d_state, headdim = s.models["base"]
    for removal in ("none", "batch"):
        fields = dict(section="mfu", case=f"base removal={removal}", backend="pure" if ctx.fused_reason
                      else "fused", precision="bf16", batch=s.batch, metric="MFU", unit="%")

        def measure(removal=removal, fields=fields):
            model = build_backbone(s, "base", removal, ctx.device)
            step = training_step(model, brain_clips(s, s.batch, ctx.device), ctx.device,
                                 torch.optim.AdamW(model.parameters(), lr=1e-4))
            with backend(fields["backend"]):
                seconds = statistics.median(time_steps(step, ctx.device, s.warmup, s.steps))
            cfg = FMambaFlopsConfig(embed_dim=c, depth=depth, d_state=d_state, headdim=headdim,
                                    img_size=s.img_size, patch_size=s.patch_size, chunk_size=s.chunk_size)
            count = packed_forward_flops if removal == "packed" else batch_forward_flops
            flops = TRAIN_TO_FORWARD * sum(count(cfg, step.lengths).values())
            achieved = flops / seconds / 1e12
            note = f"{flops:.3e} FLOP/step (analytic, train = 3 x fwd); step {seconds * 1e3:.1f} ms; " \
                   f"{achieved:.1f} TFLOP/s"
            if ctx.peak_tflops is None:
                ctx.results.add(status="skipped", note=f"{note}; unknown bf16 peak of {ctx.name!r}: "
                                "pass --peak_tflops", achieved_tflops=achieved, **fields)
                return
            value = 100 * achieved / ctx.peak_tflops
            if ctx.dry_run:  # a nominal 1 TFLOP/s "peak": the arithmetic runs, nothing is judged
                ctx.results.add(value=value, note=f"{note}; nominal peak (dry-run)", **fields)
                return
            ctx.results.add(value=value, limit=">= 30 %", status="pass" if value >= 30 else "fail",
                            note=f"{note} of {ctx.peak_tflops:g} peak", achieved_tflops=achieved, **fields)
        ctx.guarded(fields, measure)


def main_py(ctx: Context, name: str, flags: List[str]) -> dict:
    """Run project/main.py; returns its exit code, seconds and log tail."""
    s = ctx.sizes
    c, depth, d_state, headdim = s.models["base"]
    command = [sys.executable, str(REPO / "project" / "main.py"), *flags, "--run_name", name,
               "--embed_dim", str(c), "--depth", str(depth), "--d_state", str(d_state), "--headdim",
               str(headdim), "--img_size", *map(str, s.img_size), "--dataset_name", "Dummy",
               "--dummy_num_subjects", str(s.subjects), "--batch_size", str(s.batch), "--max_epochs",
               "1000", "--limit_train_batches", str(max(2, s.train_steps // 5)), "--strategy", s.strategy,
               "--precision", "bf16" if s.accelerator == "gpu" else "32", "--accelerator", s.accelerator,
               "--devices", "1", "--output_dir", str(ctx.work / "runs"), "--loggername", "csv",
               "--log_every_n_steps", "1", "--no_progress_bar", "--learning_rate", "1e-3" if ctx.dry_run
               else "1e-4",
               # the suite's own scratch folder: each call trains its runs again, replacing the last call's
               "--overwrite_run"]
    log = ctx.work / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, timeout=1500,
                            env=dict(os.environ, WANDB_MODE="offline")).returncode
    return {"rc": rc, "seconds": time.perf_counter() - started,
            "tail": " / ".join(log.read_text(errors="replace").strip().splitlines()[-4:])}


def training(ctx: Context) -> None:
    import yaml

    s = ctx.sizes
    fields = dict(section="training", backend="auto", precision="bf16" if s.accelerator == "gpu" else "32",
                  batch=s.batch)
    runs = ctx.work / "runs"
    state = {}

    def pretrain():
        result = main_py(ctx, "pretrain", ["--pretraining", "--calc_loss_without_background",
                                           "--input_scaling_method", "znorm_zeroback",
                                           "--max_steps", str(s.train_steps)])
        ok = result["rc"] == 0
        ctx.results.add(case=f"pretrain {s.strategy} {s.train_steps} steps", metric="exit code",
                        value=result["rc"], limit="== 0", status="pass" if ok else "fail",
                        note=f"{result['seconds']:.0f} s" + ("" if ok else f"; {result['tail']}"), **fields)
        if not ok:
            return
        with open(runs / "pretrain" / "metrics.csv", newline="") as f:
            val = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
        ratio = val[-1] / val[0] if len(val) > 1 else float("nan")
        ctx.results.add(case="pretrain", metric="val loss last/first", value=ratio, limit="< 1",
                        status="pass" if ratio < 1 else "fail", note=", ".join(f"{v:.4g}" for v in val),
                        **fields)
        from neuromamba.checkpoints import read_state_dict

        ckpt = runs / "pretrain" / "checkpoints" / "last.ckpt"
        dtypes = {str(v.dtype) for v in read_state_dict(ckpt, allow_pickle=True).values()
                  if v.is_floating_point()}
        ctx.results.add(case="pretrain", metric="master weight dtypes", value=len(dtypes),
                        limit="float32 only", status="pass" if dtypes == {"torch.float32"} else "fail",
                        note=f"{'folder' if ckpt.is_dir() else 'file'} {ckpt}: {sorted(dtypes)}", **fields)
        state["ckpt"] = ckpt

    def finetune():
        if "ckpt" not in state:
            return
        result = main_py(ctx, "finetune", ["--downstream_task", "sex", "--load_model_path", str(state["ckpt"]),
                                           "--allow_pickle", "--max_steps", str(s.finetune_steps)])
        ok = result["rc"] == 0
        ctx.results.add(case="finetune from the pretraining checkpoint", metric="exit code",
                        value=result["rc"], limit="== 0", status="pass" if ok else "fail",
                        note=f"{result['seconds']:.0f} s" + ("" if ok else f"; {result['tail']}"), **fields)
        if ok:
            recorded = yaml.safe_load((runs / "finetune" / "args.yaml").read_text())
            follows = (recorded["input_scaling_method"] == "znorm_zeroback"
                       and recorded["setting_sources"]["input_scaling_method"] == "checkpoint")
            ctx.results.add(case="finetune", metric="input follows the checkpoint", value=int(follows),
                            limit="== 1", status="pass" if follows else "fail",
                            note=f"input_scaling_method {recorded['input_scaling_method']} from the "
                                 f"{recorded['setting_sources']['input_scaling_method']}", **fields)

    ctx.guarded(dict(fields, case="pretrain"), pretrain)
    ctx.guarded(dict(fields, case="finetune"), finetune)


SECTIONS: Dict[str, Callable[[Context], None]] = {"parity": parity, "throughput": throughput,
                                                    "memory": memory, "training": training, "mfu": mfu}


# --------------------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_suite.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/neuromamba_gpu_suite/results")
    p.add_argument("--work_dir", default="/tmp/neuromamba_gpu_suite/work", help="run folders and logs")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list, run in the suite's order")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="tiny shapes on CPU, pure path")
    p.add_argument("--peak_tflops", type=float, default=None, help="dense bf16 peak (default: by device)")
    p.add_argument("--time_budget_s", type=float, default=530.0,
                   help="a section that would overrun what is left is skipped with a row")
    args = p.parse_args(argv)
    wanted = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in SECTIONS]
    if unknown or not wanted:
        p.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    args.sections = [n for n in SECTIONS if n in wanted]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device, name, fused_reason = detect(args.dry_run)
    peak = args.peak_tflops or (1.0 if args.dry_run else
                                next((v for k, v in PEAK_BF16_TFLOPS if k.lower() in name.lower()), None))
    meta = {"device": name, "torch": torch.__version__, "mode": "dry-run" if args.dry_run else "full",
            "fused": fused_reason or "yes"}
    results = Results(Path(args.out), meta)
    ctx = Context(DRY if args.dry_run else Sizes(), results, device, name, fused_reason,
                  Path(args.work_dir), args.dry_run, peak)
    started = time.perf_counter()
    for section in args.sections:
        left = args.time_budget_s - (time.perf_counter() - started)
        if not args.dry_run and left < BUDGETS_S[section]:
            results.add(section, "-", "run", status="skipped",
                        note=f"{left:.0f} s left of --time_budget_s, the section needs ~{BUDGETS_S[section]} s")
            continue
        print(f"[gpu_suite] {section} ({left:.0f} s left)", flush=True)
        ctx.guarded(dict(section=section, case="-"), lambda: SECTIONS[section](ctx))
    print(results.markdown())
    return 1 if results.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
