"""Analytic FLOPs of one Mamba2 layer and its chunked SSD scan (the formulas are in
:mod:`neuromamba.models.flops`' docstring), shared by the backbone's count and the heads' own
(the Mamba head is Mamba2 blocks too)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict
from ..paper import CHUNK_SIZE

# Cost in FLOPs per element of the element-wise operations (one convention, stated once).
ELEMENTWISE_COST = {
    "silu": 4,  # x * sigmoid(x): exp, add, divide, multiply
    "softplus": 3,  # log(1 + exp(x))
    "rmsnorm": 4,  # square, accumulate, scale by rsqrt, multiply by weight (rsqrt per row ignored)
}

SCAN_TERMS = ("scan_cb", "scan_intra", "scan_states", "scan_passing", "scan_output", "scan_skip")


@dataclass(frozen=True)
class Mamba2Dims:
    """Derived sizes of one Mamba2 layer (mamba_ssm naming)."""

    d_model: int
    d_state: int
    headdim: int
    expand: int = 2
    ngroups: int = 1
    d_conv: int = 4
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self):
        if (self.expand * self.d_model) % self.headdim:
            raise ValueError(
                f"expand*d_model = {self.expand * self.d_model} is not divisible by headdim "
                f"{self.headdim}"
            )

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def in_proj_out(self) -> int:
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads

    def num_parameters(self) -> int:
        """in_proj, conv1d (weight+bias), dt_bias, A_log, D, gated-norm weight, out_proj."""
        return (
            self.d_model * self.in_proj_out
            + self.conv_dim * self.d_conv
            + self.conv_dim
            + 3 * self.nheads
            + self.d_inner
            + self.d_inner * self.d_model
        )


def ssd_scan_matmul_flops(seqlen: int, dims: Mamba2Dims) -> Dict[str, int]:
    """Only the four batched matmuls of the chunked scan (what a profiler sees as ``bmm``):
    ``CB``, ``(CB∘L) @ X``, the chunk states and the state -> output product."""
    Q, H, P, N, G = dims.chunk_size, dims.nheads, dims.headdim, dims.d_state, dims.ngroups
    Lp = math.ceil(max(seqlen, 0) / Q) * Q
    return {
        "scan_cb": 2 * Lp * Q * N * G,
        "scan_intra": 2 * Lp * Q * H * P,
        "scan_states": 2 * Lp * H * N * P,
        "scan_output": 2 * Lp * H * N * P,
    }


def ssd_scan_flops(seqlen: int, dims: Mamba2Dims, causal_half: bool = False) -> Dict[str, int]:
    """FLOPs of the chunked SSD scan for one sequence of ``seqlen`` tokens (formulas above)."""
    if seqlen <= 0:
        return {k: 0 for k in SCAN_TERMS}
    Q, H, P, N, G = dims.chunk_size, dims.nheads, dims.headdim, dims.d_state, dims.ngroups
    chunks = math.ceil(seqlen / Q)
    Lp = chunks * Q
    quad = 0.5 if causal_half else 1.0
    return {
        "scan_cb": int(quad * 2 * Lp * Q * N * G),
        "scan_intra": int(quad * (3 * Lp * Q * H + 2 * Lp * Q * H * P)),
        "scan_states": 2 * Lp * H * N * P + 2 * Lp * H,
        "scan_passing": 2 * chunks * H * N * P,
        "scan_output": 2 * Lp * H * N * P + Lp * H * P,
        "scan_skip": 2 * Lp * H * P,
    }


def mamba2_layer_flops(seqlen: int, dims: Mamba2Dims, causal_half: bool = False) -> Dict[str, int]:
    """Forward FLOPs of one Mamba2 layer on one sequence of ``seqlen`` tokens, by term."""
    L, C, E = seqlen, dims.d_model, dims.d_inner
    terms = {
        "in_proj": 2 * L * C * dims.in_proj_out,
        "conv1d": L * dims.conv_dim * (2 * dims.d_conv + ELEMENTWISE_COST["silu"]),
        "dt": L * dims.nheads * (ELEMENTWISE_COST["softplus"] + 3),
    }
    terms.update(ssd_scan_flops(L, dims, causal_half))
    terms["gated_norm"] = L * E * (ELEMENTWISE_COST["silu"] + 1 + ELEMENTWISE_COST["rmsnorm"])
    terms["out_proj"] = 2 * L * E * C
    return terms
