"""Mamba2 mixer: a drop-in for ``mamba_ssm.modules.mamba2.Mamba2`` (mamba_ssm >= 2.3.0).

Same constructor, parameter names, shapes and initialisation, so checkpoints move freely
between the two. The forward dispatches per call:

* ``fused``: mamba_ssm's Triton/CUDA kernels (``mamba_split_conv1d_scan_combined``, or
  ``causal_conv1d_fn`` + ``mamba_chunk_scan_combined`` when ``use_mem_eff_path=False``),
  used when the input is on CUDA and mamba-ssm >= 2.3.0 and causal-conv1d >= 1.5.1 import;
  on CPU tensors only when forced under Triton's interpreter (the tests' way to run the real
  kernels without a GPU: ``models/fused_kernels.py``);
* ``pure``: the pure-PyTorch path of this package (``models/ops``): runs anywhere, same math.

The environment variable ``NEUROMAMBA_MAMBA_BACKEND=pure|fused|auto`` (default auto, read on
every call) forces one; ``last_path`` says which ran. ``mamba_ssm`` is imported lazily, at most
once, never at import time (``fused_kernels.load_fused_ops``).
"""

import functools
import math
import os
import warnings
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import neuromamba.models.ops as ops
from .fused_kernels import load_fused_ops, triton_interpreter_on
from ..paper import CHUNK_SIZE

__all__ = ["Mamba2", "RMSNorm", "RMSNormGated", "BACKEND_ENV_VAR", "select_backend"]

BACKEND_ENV_VAR = "NEUROMAMBA_MAMBA_BACKEND"
BACKENDS = ("auto", "pure", "fused")
# The pure path on CPU scans in chunks of at most this many tokens, whatever chunk_size says:
# the SSD result does not depend on the chunking (tests/models/test_mamba2.py checks 7 to 256
# against each other and against a token-by-token recurrence), while the (Q x Q) work per
# token grows with Q. Scan forward+backward at 41k tokens, Base layer, 1 thread: 0.68 s at
# Q=256, 0.45 s at 128, 0.37 s at 64, 0.38 s at 48 and 32 (benchmarks/README_mamba2.md).
PURE_CPU_MAX_CHUNK = 64


# --------------------------------------------------------------------------- norms
class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight``, computed in fp32, returned in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(_compute_dtype(x))
        out = x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)
        return (out * self.weight.to(x32.dtype)).to(x.dtype)


class RMSNormGated(nn.Module):
    """mamba_ssm's gated RMSNorm (``ops.triton.layernorm_gated.RMSNorm``).

    ``norm_before_gate``: norm(x) * silu(z); else norm(x * silu(z)). The mean square is taken
    over groups of ``group_size`` channels (Mamba2 uses d_ssm / ngroups). fp32 inside.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, group_size: Optional[int] = None,
                 norm_before_gate: bool = True, device=None, dtype=None):
        super().__init__()
        if group_size is not None and hidden_size % group_size != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of "
                             f"group_size {group_size}")
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        group = self.group_size or x.shape[-1]
        return ops.gated_rms_norm(x, z, self.weight, self.eps, group, self.norm_before_gate)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 inputs, fp64 for fp64 (the tests run in double)."""
    return torch.promote_types(x.dtype, torch.float32)


# --------------------------------------------------------------------------- backend choice
# What ran, by the ops available: the full fused chain; causal_conv1d's conv with mamba_ssm's
# scan (use_mem_eff_path=False); mamba_ssm's Triton scan and gated norm with the project's own
# conv (no causal-conv1d: it needs a CUDA compile; also every CPU run under Triton's
# interpreter); or the pure-PyTorch path.
FUSED_PATHS = {"fused": "mamba_split_conv1d_scan_combined",
               "split": "causal_conv1d_fn + mamba_chunk_scan_combined",
               "scan_only": "pure-PyTorch conv + mamba_chunk_scan_combined",
               "pure": "pure-PyTorch conv + scan"}


@functools.lru_cache(maxsize=None)
def _warn_fallback_once(reason: str) -> None:
    warnings.warn(f"Mamba2: using the pure-PyTorch path on CUDA because {reason}; "
                  f"install mamba-ssm>=2.3.0 and causal-conv1d>=1.5.1 for the fused kernels",
                  RuntimeWarning, stacklevel=3)


def select_backend(device: torch.device):
    """The fused ops dict for this call, or None for the pure path (reads the env var).

    ``auto``: fused on CUDA when mamba_ssm imports, else pure. ``fused``: mamba_ssm's kernels or
    an error; on CPU only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests: it is
    slow), where causal-conv1d's CUDA kernel cannot run and the conv stays pure PyTorch."""
    choice = os.environ.get(BACKEND_ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV_VAR}={choice!r}: expected one of {', '.join(BACKENDS)}")
    if choice == "pure":
        return None
    if device.type != "cuda":
        if choice == "auto":
            return None
        if device.type != "cpu" or not triton_interpreter_on():
            raise RuntimeError(f"{BACKEND_ENV_VAR}=fused needs a CUDA input, or a CPU input under "
                               f"Triton's interpreter (TRITON_INTERPRET=1); got {device.type}")
    ops = load_fused_ops()
    if isinstance(ops, str):
        if choice == "fused":
            raise RuntimeError(f"{BACKEND_ENV_VAR}=fused but {ops}")
        _warn_fallback_once(ops)
        return None
    if device.type == "cpu":
        return {**ops, "causal_conv1d_fn": None}
    return ops


# --------------------------------------------------------------------------- the layer
class Mamba2(nn.Module):
    """The Mamba2 mixer of mamba_ssm 2.x (same arguments, parameters, init and forward).

    in_proj -> [z, xBC, dt] (plus [z0, x0] gated-MLP channels when d_ssm < expand*d_model)
    -> causal depthwise conv + SiLU on xBC -> SSD scan -> gated RMSNorm with z -> out_proj.
    ``forward(u, seq_idx=None)``: u (batch, seqlen, d_model); seq_idx (batch, seqlen) int32
    marks packed sequences (no conv tap, intra-chunk term or state crosses a boundary).
    A_log, D and dt_bias carry ``_no_weight_decay = True`` for optimizer grouping.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: Optional[float] = None,
        expand: int = 2,
        headdim: int = 64,
        d_ssm: Optional[int] = None,
        ngroups: int = 1,
        A_init_range: Tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: Tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = CHUNK_SIZE,
        use_mem_eff_path: bool = True,
        layer_idx: Optional[int] = None,
        device=None,
        dtype=None,
    ):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.conv_init = conv_init
        self.expand = expand
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        self.ngroups = ngroups
        if self.d_ssm % headdim != 0:
            raise ValueError(f"Mamba2: d_ssm ({self.d_ssm}) must be a multiple of "
                             f"headdim ({headdim})")
        if self.d_ssm > self.d_inner:
            raise ValueError(f"Mamba2: d_ssm ({self.d_ssm}) exceeds "
                             f"expand*d_model ({self.d_inner})")
        self.nheads = self.d_ssm // headdim
        if self.nheads % ngroups != 0:
            raise ValueError(f"Mamba2: nheads ({self.nheads}) must be a multiple of "
                             f"ngroups ({ngroups})")
        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"Mamba2: A_init_range must satisfy 0 < lo <= hi, got {A_init_range}")
        self.D_has_hdim = D_has_hdim
        self.rmsnorm = rmsnorm
        self.norm_before_gate = norm_before_gate
        self.dt_limit = tuple(dt_limit)
        self.activation = "silu"
        self.chunk_size = chunk_size
        self.use_mem_eff_path = use_mem_eff_path
        self.last_path = None  # which of FUSED_PATHS the last forward ran (benchmarks report it)
        self.layer_idx = layer_idx

        # in_proj output order: [z0, x0 (d_mlp each, only when d_ssm < d_inner), z, xBC, dt]
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **factory_kwargs)

        conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim,
                                padding=d_conv - 1, bias=conv_bias, **factory_kwargs)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)

        # dt log-uniform in [dt_min, dt_max], stored as softplus^-1(dt) so softplus(dt_bias) = dt.
        dt = torch.exp(torch.rand(self.nheads, **factory_kwargs)
                       * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = torch.clamp(dt, min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))
        self.dt_bias = nn.Parameter(inv_dt)
        self.dt_bias._no_weight_decay = True

        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.A_log._no_weight_decay = True

        self.D = nn.Parameter(torch.ones(self.d_ssm if D_has_hdim else self.nheads, device=device))
        self.D._no_weight_decay = True

        if rmsnorm:
            self.norm = RMSNormGated(self.d_ssm, eps=1e-5, norm_before_gate=norm_before_gate,
                                     group_size=self.d_ssm // ngroups, **factory_kwargs)

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    # The D skip as the scan wants it: (h,) or (h, p).
    def _D(self) -> torch.Tensor:
        return self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D

    def _dt_limit_kwargs(self) -> dict:
        return {} if self.dt_limit == (0.0, float("inf")) else {"dt_limit": self.dt_limit}

    def forward(self, u: torch.Tensor, seq_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """u (batch, seqlen, d_model) -> (batch, seqlen, d_model); seq_idx (batch, seqlen) int32."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Mamba2: expected input (batch, seqlen, {self.d_model}), "
                             f"got {tuple(u.shape)}")
        if seq_idx is not None and seq_idx.shape != u.shape[:2]:
            raise ValueError(f"Mamba2: seq_idx must be (batch, seqlen) = {tuple(u.shape[:2])}, "
                             f"got {tuple(seq_idx.shape)}")
        fused = select_backend(u.device)
        if fused is not None and self.use_mem_eff_path and fused["causal_conv1d_fn"] is not None:
            self.last_path = "fused"
            return self._forward_fused_mem_eff(u, seq_idx, fused)
        if fused is None:
            self.last_path = "pure"
        else:
            self.last_path = "split" if fused["causal_conv1d_fn"] is not None else "scan_only"
        return self._forward_split(u, seq_idx, fused)

    def _forward_fused_mem_eff(self, u, seq_idx, fused):
        """One fused kernel chain from in_proj output to out_proj (mamba_ssm's default path)."""
        zxbcdt = self.in_proj(u)
        A = -torch.exp(self.A_log.float())
        return fused["mamba_split_conv1d_scan_combined"](
            zxbcdt,
            self.conv1d.weight.squeeze(1),
            self.conv1d.bias,
            self.dt_bias,
            A,
            D=self._D(),
            chunk_size=self.chunk_size,
            seq_idx=seq_idx,
            activation=self.activation,
            rmsnorm_weight=self.norm.weight if self.rmsnorm else None,
            rmsnorm_eps=self.norm.eps if self.rmsnorm else 1e-6,
            outproj_weight=self.out_proj.weight,
            outproj_bias=self.out_proj.bias,
            headdim=None if self.D_has_hdim else self.headdim,
            ngroups=self.ngroups,
            norm_before_gate=self.norm_before_gate,
            **self._dt_limit_kwargs(),
        )

    def _in_proj_pieces(self, u, sizes):
        """in_proj's output cut into pieces of the given widths (last dim).

        On CPU each piece is its own GEMM on a row block of in_proj.weight: the pieces come out
        contiguous, so the conv, scan and norm read dense tensors instead of column slices of
        one (L, d_in_proj) output, and the backward needs no zero-filled (L, d_in_proj)
        gradient assembled by autograd's split. Same math and FLOPs; 3% of the layer's
        forward+backward at 41k tokens (benchmarks/README_mamba2.md). The module's own forward
        (and any hook on in_proj) is bypassed there. Elsewhere: one GEMM, then split.
        """
        if u.device.type != "cpu":
            return torch.split(self.in_proj(u), sizes, dim=-1)
        bias = self.in_proj.bias
        biases = [None] * len(sizes) if bias is None else bias.split(sizes)
        return tuple(F.linear(u, w, b) for w, b in zip(self.in_proj.weight.split(sizes), biases))

    def _forward_split(self, u, seq_idx, fused):
        """Step by step: conv, scan, norm, out_proj (fused kernels for conv/scan if given)."""
        batch, seqlen, _ = u.shape
        A = -torch.exp(self.A_log.to(_compute_dtype(self.A_log)))  # fp32 (fp64 stays fp64)
        d_mlp = (self.in_proj.out_features - 2 * self.d_ssm - 2 * self.ngroups * self.d_state
                 - self.nheads) // 2
        z0, x0, z, xBC, dt = self._in_proj_pieces(
            u, [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * self.ngroups * self.d_state,
                self.nheads])
        conv_weight = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        chunk_size = self.chunk_size
        if fused is None or fused["causal_conv1d_fn"] is None:
            xBC = ops.causal_conv1d(xBC, conv_weight, self.conv1d.bias, seq_idx=seq_idx,
                                        activation=self.activation)
        else:
            xBC = fused["causal_conv1d_fn"](xBC.transpose(1, 2), conv_weight,
                                            bias=self.conv1d.bias, activation=self.activation,
                                            seq_idx=seq_idx).transpose(1, 2)
        if fused is None:
            chunk_scan = ops.mamba_chunk_scan_combined
            if u.device.type == "cpu":
                chunk_size = min(chunk_size, PURE_CPU_MAX_CHUNK)
        else:
            chunk_scan = fused["mamba_chunk_scan_combined"]
        x, B, C = torch.split(
            xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        heads = (batch, seqlen, self.nheads, self.headdim)
        groups = (batch, seqlen, self.ngroups, self.d_state)
        y = chunk_scan(
            x.reshape(heads), dt, A, B.reshape(groups), C.reshape(groups),
            chunk_size=chunk_size,
            D=self._D(),
            z=None if self.rmsnorm else z.reshape(heads),
            dt_bias=self.dt_bias,
            dt_softplus=True,
            seq_idx=seq_idx,
            **self._dt_limit_kwargs(),
        )
        y = y.reshape(batch, seqlen, self.d_ssm)
        if self.rmsnorm and fused is not None:  # mamba_ssm's Triton gated RMSNorm, as its Mamba2
            y = fused["rmsnorm_fn"](y, self.norm.weight, self.norm.bias, z=z, eps=self.norm.eps,
                                    group_size=self.norm.group_size,
                                    norm_before_gate=self.norm_before_gate)
        elif self.rmsnorm:
            y = self.norm(y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return self.out_proj(y)
