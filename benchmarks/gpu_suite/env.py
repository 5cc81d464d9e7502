"""Device facts, backend/precision switches, timing and memory measurement."""
from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name substring; the first
# match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3): "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),
    ("A100", 312.0),
)
DRY_RUN_PEAK_TFLOPS = 1.0  # a nominal CPU "peak" so the MFU arithmetic runs in --dry-run
GIB = 1024 ** 3


def peak_tflops_for(device_name: str) -> Optional[float]:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


@dataclass
class DeviceInfo:
    device: torch.device
    name: str
    fused_ops: object  # dict of fused callables, or a str saying why they are unavailable

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def fused_reason(self) -> Optional[str]:
        """None when the fused kernels can run, else why not (for 'skipped'/'error' rows)."""
        if not self.is_cuda:
            return "skipped: no CUDA"
        return self.fused_ops if isinstance(self.fused_ops, str) else None


def detect_device(dry_run: bool) -> DeviceInfo:
    if dry_run:
        return DeviceInfo(torch.device("cpu"), f"CPU ({platform.processor() or platform.machine()})",
                          "no CUDA")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is visible; run with --dry-run on a machine without a GPU")
    from neuromamba.models.mamba2 import load_fused_ops

    return DeviceInfo(torch.device("cuda", torch.cuda.current_device()),
                      torch.cuda.get_device_name(), load_fused_ops())


def environment_meta(info: DeviceInfo) -> Dict[str, str]:
    meta = {"device": info.name, "torch": torch.__version__, "python": platform.python_version()}
    if info.is_cuda:
        meta["cuda"] = str(torch.version.cuda)
    for module in ("mamba_ssm", "causal_conv1d", "triton", "deepspeed", "pytorch_lightning"):
        try:
            meta[module] = __import__(module).__version__
        except Exception as err:  # missing, or an import error on this machine
            meta[module] = f"not importable ({type(err).__name__})"
    return meta


# ------------------------------------------------------------------------------- switches
@contextlib.contextmanager
def mamba_backend(name: str):
    """Force the Mamba2 backend (``pure`` or ``fused``) for the duration of the block; Mamba2
    reads ``NEUROMAMBA_MAMBA_BACKEND`` on every call."""
    from neuromamba.models.mamba2 import BACKEND_ENV_VAR

    before = os.environ.get(BACKEND_ENV_VAR)
    os.environ[BACKEND_ENV_VAR] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BACKEND_ENV_VAR, None)
        else:
            os.environ[BACKEND_ENV_VAR] = before


TRITON_F32_ENV = "TRITON_F32_DEFAULT"  # Triton's default precision of fp32 tl.dot ("tf32")


@contextlib.contextmanager
def no_tf32():
    """fp32 matmuls/convolutions in full fp32 (TF32 off), restored afterwards: PyTorch's
    cuBLAS/cuDNN flags, and Triton's default for fp32 ``tl.dot`` (mamba_ssm's kernels call
    ``tl.dot`` without a precision, which is TF32 on Ampere/Hopper unless this says "ieee";
    Triton reads it when it compiles a kernel, and fp32 inputs get their own compiled kernels)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    triton_default = os.environ.get(TRITON_F32_ENV)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.environ[TRITON_F32_ENV] = "ieee"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        if triton_default is None:
            os.environ.pop(TRITON_F32_ENV, None)
        else:
            os.environ[TRITON_F32_ENV] = triton_default


def _fp32(device: torch.device):
    return no_tf32()


def _bf16_autocast(device: torch.device):
    # Parameters stay fp32; autocast runs matmuls in bf16 (SPEC §6: the maintainers' advice).
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


PRECISIONS: Dict[str, Callable[[torch.device], contextlib.AbstractContextManager]] = {
    "fp32": _fp32,
    "bf16": _bf16_autocast,
}


def precision_context(name: str, device: torch.device):
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {sorted(PRECISIONS)}")
    return PRECISIONS[name](device)


# ------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    step_seconds: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.step_seconds)


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, steps: int) -> Timing:
    """Run ``step`` ``warmup`` times untimed (kernel autotuning, allocator warm-up), then time
    each of ``steps`` calls (CUDA events on GPU, perf_counter on CPU)."""
    if steps < 1:
        raise ValueError("timed steps must be >= 1")
    for _ in range(warmup):
        step()
    synchronize(device)
    seconds = []
    if device.type == "cuda":
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000.0)
    else:
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - t0)
    return Timing(seconds)


# ------------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> Dict[str, float]:
    """GPU: peak allocated and reserved by PyTorch's allocator since the last reset. CPU
    (dry-run): the process's peak resident set, a stand-in that only exercises the pipeline."""
    if device.type == "cuda":
        return {"allocated": torch.cuda.max_memory_allocated(device) / GIB,
                "reserved": torch.cuda.max_memory_reserved(device) / GIB}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"allocated": rss_kib / (1024 ** 2), "reserved": float("nan")}


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------- errors
def error_text(err: BaseException, max_frames: int = 3) -> str:
    """One line: the exception and the innermost frames, for an 'error' row's note."""
    frames = traceback.extract_tb(err.__traceback__)[-max_frames:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames))
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" + (f" [at {where}]" if where else "")


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
