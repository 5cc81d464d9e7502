"""mamba_ssm's fused Mamba2 kernels, loaded lazily: on CUDA, and on CPU through Triton's interpreter.

``load_fused_ops()`` imports them at most once per process and returns a dict of callables, or a
string saying why they are not there. ``mamba_ssm`` is never imported at package import time: it
is absent (or fails to import) on most machines without CUDA, and the pure-PyTorch path of
``models/ops`` runs everywhere.

**CPU, for tests.** mamba_ssm's Mamba2 kernels are Triton kernels, and Triton runs Triton
kernels on CPU tensors in its interpreter (``TRITON_INTERPRET=1``, fp32). ``setup_env.sh --dev``
installs mamba-ssm without its CUDA build on machines without CUDA, so the test suite runs the
real kernels through the project's own dispatch. Four things stand between those kernels and a
CPU, each stepped around by :func:`prepare_cpu_interpreter` (only under the interpreter):

1. mamba_ssm's package ``__init__`` imports its Mamba-1 CUDA extension ``selective_scan_cuda``
   (not built without CUDA, never used by Mamba2): a module that refuses any use stands in for
   it, at import only.
2. The kernels' launchers enter ``torch.cuda.device(tensor.device.index)``; a CPU tensor's index
   is ``None``, which torch documents as a no-op, but torch's fallback ``_exchange_device``
   (no CUDA runtime) compares ``None < 0`` and raises. ``None`` is passed on as ``-1``, the
   documented no-op.
3. The backward launchers size their grids from ``torch.cuda.get_device_properties(dev)
   .multi_processor_count``; for a CPU device that count is an H100's (132 SMs), so the kernels
   split their work exactly as on the GPU our users train on.
4. Triton's autotuner benchmarks every config on a GPU timer that the interpreter lacks; each
   of mamba_ssm's autotuned kernels is pinned to its first config (the values do not depend on
   the config, only the speed does).

What the interpreter cannot run: ``mamba_split_conv1d_scan_combined`` (the mem-efficient chain)
calls causal-conv1d's compiled CUDA kernel, so on CPU the dispatch runs the project's conv with
mamba_ssm's Triton scan and gated RMSNorm (path ``scan_only``).
"""
from __future__ import annotations

import functools
import os
import sys
import types
from typing import Tuple

import torch

__all__ = ["load_fused_ops", "triton_interpreter_on", "prepare_cpu_interpreter",
           "MIN_MAMBA_SSM", "MIN_CAUSAL_CONV1D", "H100_SM_COUNT"]

MIN_MAMBA_SSM = (2, 3, 0)  # stride fixes for in_proj widths not a multiple of 8; seq_idx grads
MIN_CAUSAL_CONV1D = (1, 5, 1)
H100_SM_COUNT = 132  # streaming multiprocessors of an H100 SXM
_INTERPRETER_ENV_VAR = "TRITON_INTERPRET"


def triton_interpreter_on() -> bool:
    """Whether Triton runs kernels in its interpreter (on CPU tensors) in this process."""
    return os.environ.get(_INTERPRETER_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def version_tuple(version: str) -> Tuple[int, ...]:
    """``"2.3.2.post1"`` -> (2, 3, 2); ``"1.5.0rc1+cu12"`` -> (1, 5, 0)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:  # e.g. "0rc1": stop after the numeric prefix
            break
    return tuple(parts)


# --------------------------------------------------------------------------- CPU interpreter
def _refusing_module(name: str, why: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def __getattr__(attr):  # AttributeError, so probes (hasattr, inspect) see an empty module
        raise AttributeError(f"{name}.{attr}: {why}")
    module.__getattr__ = __getattr__
    return module


def _stand_in_for_mamba1_extension() -> None:
    try:
        import selective_scan_cuda  # noqa: F401  (built: nothing to do)
    except ImportError:
        sys.modules["selective_scan_cuda"] = _refusing_module(
            "selective_scan_cuda", "mamba_ssm's Mamba-1 CUDA extension is not built on this "
            "machine (NeuroMamba uses only Mamba2's Triton kernels)")


def _device_none_is_a_no_op() -> None:
    cuda = torch.cuda
    if getattr(cuda._exchange_device, "_neuromamba_shim", False):
        return
    exchange, maybe_exchange = cuda._exchange_device, cuda._maybe_exchange_device

    def _exchange(device):
        return -1 if device is None else exchange(device)

    def _maybe_exchange(device):
        return -1 if device is None else maybe_exchange(device)
    _exchange._neuromamba_shim = _maybe_exchange._neuromamba_shim = True
    cuda._exchange_device, cuda._maybe_exchange_device = _exchange, _maybe_exchange


def _cpu_reports_h100_sm_count() -> None:
    cuda = torch.cuda
    if getattr(cuda.get_device_properties, "_neuromamba_shim", False):
        return
    real = cuda.get_device_properties

    def get_device_properties(device=None):
        if device is not None and torch.device(device).type == "cpu":
            return types.SimpleNamespace(name="Triton interpreter (CPU)",
                                         multi_processor_count=H100_SM_COUNT)
        return real(device)
    get_device_properties._neuromamba_shim = True
    cuda.get_device_properties = get_device_properties


def _pin_autotuners_to_first_config() -> int:
    from triton.runtime.autotuner import Autotuner

    pinned = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("mamba_ssm.ops.triton"):
            continue
        for value in vars(module).values():
            if isinstance(value, Autotuner) and len(value.configs) > 1:
                value.configs = value.configs[:1]
                pinned += 1
    return pinned


def _kernels_are_interpreted() -> bool:
    """Triton decides at decoration (import) time whether a kernel is interpreted: mamba_ssm's
    kernels and Triton's own library functions they call must all have been imported with
    the interpreter on."""
    import triton.language.standard as triton_standard
    from mamba_ssm.ops.triton.ssd_chunk_scan import _chunk_scan_fwd_kernel
    from triton.runtime.interpreter import InterpretedFunction

    def interpreted(kernel):
        while not isinstance(kernel, InterpretedFunction) and hasattr(kernel, "fn"):
            kernel = kernel.fn  # autotuner / heuristics wrappers
        return isinstance(kernel, InterpretedFunction)
    return interpreted(_chunk_scan_fwd_kernel) and interpreted(triton_standard.sigmoid)


def prepare_cpu_interpreter() -> None:
    """Make mamba_ssm's Triton kernels runnable on CPU tensors (see the module docstring);
    idempotent. Only for ``TRITON_INTERPRET=1``: on a GPU none of this is wanted."""
    if not triton_interpreter_on():
        raise RuntimeError(f"prepare_cpu_interpreter() needs {_INTERPRETER_ENV_VAR}=1")
    _stand_in_for_mamba1_extension()
    _device_none_is_a_no_op()
    _cpu_reports_h100_sm_count()


# --------------------------------------------------------------------------- the loader
@functools.lru_cache(maxsize=1)
def load_fused_ops():
    """Import mamba_ssm's kernels once. Returns a dict of callables (``causal_conv1d_fn`` None
    when causal-conv1d is missing: the scan still runs fused), or a str saying why none."""
    interpreter = triton_interpreter_on()
    try:
        if interpreter:
            prepare_cpu_interpreter()
        import mamba_ssm
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.ssd_combined import (
            mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined)
    except Exception as err:  # ImportError, or CUDA/Triton errors raised at import time
        return f"mamba_ssm not importable ({type(err).__name__}: {err})"
    found = getattr(mamba_ssm, "__version__", "0")
    if version_tuple(found) < MIN_MAMBA_SSM:
        return f"mamba_ssm {found} is older than {'.'.join(map(str, MIN_MAMBA_SSM))}"
    if interpreter:
        if not _kernels_are_interpreted():
            return (f"Triton was imported before {_INTERPRETER_ENV_VAR}=1 was set, so kernels "
                    f"are compiled for a GPU; set it before anything imports triton (or torch's "
                    f"compiler)")
        _pin_autotuners_to_first_config()
    conv = None
    try:
        import causal_conv1d
        from causal_conv1d import causal_conv1d_fn

        if version_tuple(getattr(causal_conv1d, "__version__", "0")) >= MIN_CAUSAL_CONV1D:
            conv = causal_conv1d_fn
    except Exception:  # not installed (it needs a CUDA build): the conv stays pure PyTorch
        conv = None
    return {"causal_conv1d_fn": conv,
            "mamba_chunk_scan_combined": mamba_chunk_scan_combined,
            "mamba_split_conv1d_scan_combined": mamba_split_conv1d_scan_combined,
            "rmsnorm_fn": rmsnorm_fn,
            "version": found}
