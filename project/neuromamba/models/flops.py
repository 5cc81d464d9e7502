"""Analytic FLOPs and parameter counts for FMamba (NeuroMamba) configurations.

Profilers see the GEMMs but miss the SSD scan when it runs in fused Triton kernels (and
DeepSpeed's profiler, which the paper used, only hooks ``torch.nn.functional`` calls), so
every term is counted here from the shapes. One FLOP is one multiply or one add: a GEMM of
``(m x k) @ (k x n)`` costs ``2·m·k·n``. Element-wise non-linearities use the fixed costs in
``ELEMENTWISE_COST`` (conventions differ between profilers; these terms are < 2% of the total).

Notation for one Mamba2 layer (mamba_ssm semantics, see SPEC §6): ``C`` = d_model,
``E = expand·C`` = d_inner = d_ssm, ``H = E / P`` heads of size ``P`` = headdim, ``N`` =
d_state, ``G`` = ngroups, ``K`` = d_conv, ``Q`` = chunk_size, ``L`` = tokens of one sequence,
``c = ceil(L / Q)`` chunks (the scan pads L to ``c·Q`` with dt = 0, so padded positions cost
the same as real ones).

Per sequence of length L:

* ``in_proj``   : ``2·L·C·(2E + 2GN + H)``
* ``conv1d``    : depthwise causal conv over ``D_conv = E + 2GN`` channels:
  ``L·D_conv·(2K + silu)`` (K multiply-adds, the bias, SiLU)
* dt / decay    : ``softplus(dt + dt_bias)`` and ``dt·A`` plus the in-chunk cumulative sum:
  ``L·H·(softplus + 3)``
* SSD scan, chunked (Dao & Gu 2024, "state-space duality"), padded length ``Lp = c·Q``:

  - ``CB``          : ``C_chunk @ B_chunkᵀ`` per chunk and group: ``2·Lp·Q·N·G``
  - intra-chunk     : decay mask ``exp(segsum)`` and ``dt`` scaling on each ``Q x Q`` block
    (``3·Lp·Q·H``) then ``(CB ∘ Lmask) @ X``: ``2·Lp·Q·H·P``
  - chunk states    : ``Σ_t decay_t·dt_t·B_t ⊗ x_t`` per chunk: ``2·Lp·H·N·P`` (+ ``2·Lp·H``
    for the decay weights)
  - state passing   : ``h_c = exp(ΣA_c)·h_{c-1} + s_c`` over chunks: ``2·c·H·N·P``
  - state -> output : ``C_t @ h_{c-1}`` scaled by ``exp(A_cumsum_t)``: ``2·Lp·H·N·P + Lp·H·P``
  - skip ``D·x``    : ``2·Lp·H·P``

  The quadratic (intra-chunk) terms are counted over the full ``Q x Q`` blocks, as the kernels
  execute them; the causal mask zeroes half of each block, so ``causal_half=True`` halves them.
* gated RMSNorm : ``y·silu(z)`` then RMSNorm with weight: ``L·E·(silu + 1 + RMSNORM)``
* ``out_proj``  : ``2·L·E·C``

Per FMamba block add the pre-norm RMSNorm and the residual, ``L·C·(RMSNORM + 1)``. Around the
blocks: patch projection ``2·L·432·C`` (``432 = prod(patch_size)``), the positional add
``L·C``, the final RMSNorm ``L·C·RMSNORM``, and either the pretraining output layer
``L·(2·C·432 + 432)`` plus the MSE loss ``3·L·432``, or a classification/regression head.

Training FLOPs use the usual ``backward ≈ 2 x forward`` rule: ``train = 3 x forward``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, Mapping, Optional, Sequence, Tuple

from ..paper import CHUNK_SIZE, PAPER_DEFAULTS
from .head_base import HeadContext
from .heads import HEADS
from .layer_flops import (ELEMENTWISE_COST, SCAN_TERMS, Mamba2Dims,  # noqa: F401  (re-exported)
                          mamba2_layer_flops, ssd_scan_flops, ssd_scan_matmul_flops)

TRAIN_TO_FORWARD = 3  # forward + backward (≈ 2 x forward)

GEMM_TERMS = ("patch_projection", "in_proj", "out_proj", "output_layer")

@dataclass(frozen=True)
class FMambaFlopsConfig:
    """Everything that determines the cost of one FMamba forward pass."""

    embed_dim: int = 192
    depth: int = 12
    d_state: int = 48
    headdim: int = 192
    img_size: Tuple[int, int, int, int] = tuple(PAPER_DEFAULTS["img_size"])
    patch_size: Tuple[int, int, int, int] = tuple(PAPER_DEFAULTS["patch_size"])
    expand: int = 2
    ngroups: int = 1
    d_conv: int = 4
    chunk_size: int = CHUNK_SIZE
    pretraining: bool = True  # output layer Linear(C, 432) + MSE loss instead of a head
    head: Optional[str] = None  # a heads.HEADS name, or None (only used when not pretraining)
    num_outputs: int = 2
    head_headdim: Optional[int] = None  # Mamba head blocks: default C (2 heads), d_state = C/16
    head_depth: int = 3
    static_time_tokens: int = 0  # leading time tokens that are a static image (connectivity head)

    def __post_init__(self):
        if len(self.img_size) != 4 or len(self.patch_size) != 4:
            raise ValueError("img_size and patch_size need 4 values (D H W T)")
        for axis, (s, p) in enumerate(zip(self.img_size, self.patch_size)):
            if p <= 0 or s % p:
                raise ValueError(
                    f"img_size {tuple(self.img_size)} is not divisible by patch_size "
                    f"{tuple(self.patch_size)} on axis {axis}"
                )
        if not self.pretraining and self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose from {sorted(HEADS)}")

    @property
    def grid(self) -> Tuple[int, int, int, int]:
        return tuple(s // p for s, p in zip(self.img_size, self.patch_size))

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def patch_dim(self) -> int:
        return math.prod(self.patch_size)

    @property
    def mixer(self) -> Mamba2Dims:
        return Mamba2Dims(
            self.embed_dim, self.d_state, self.headdim, self.expand, self.ngroups, self.d_conv,
            self.chunk_size,
        )



# --------------------------------------------------------------------------------------------
# Heads: each head class counts its own (models.heads.HEADS, the one registry)
# --------------------------------------------------------------------------------------------
def head_context(cfg: FMambaFlopsConfig) -> HeadContext:
    """The head's view of a configuration."""
    return HeadContext(cfg.embed_dim, cfg.num_outputs, cfg.grid, cfg.static_time_tokens,
                       cfg.chunk_size, cfg.expand, cfg.ngroups, cfg.d_conv, cfg.head_depth,
                       cfg.head_headdim)


def head_parameters(cfg: FMambaFlopsConfig) -> int:
    return HEADS[cfg.head].num_parameters(head_context(cfg))


# --------------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------------


def fmamba_forward_flops(
    cfg: FMambaFlopsConfig, seqlen: Optional[int] = None, causal_half: bool = False
) -> Dict[str, int]:
    """Forward FLOPs of FMamba (plus output layer or head) for ONE sample of ``seqlen`` kept
    tokens (default: every token of the grid), broken down by term."""
    L = cfg.num_tokens if seqlen is None else int(seqlen)
    if L < 0 or L > cfg.num_tokens:
        raise ValueError(f"seqlen {L} outside [0, {cfg.num_tokens}] for img_size {cfg.img_size}")
    C, pd = cfg.embed_dim, cfg.patch_dim
    terms: Dict[str, int] = {
        "patch_projection": 2 * L * pd * C,
        "pos_add": L * C,
    }
    layer = mamba2_layer_flops(L, cfg.mixer, causal_half)
    for key, value in layer.items():
        terms[key] = cfg.depth * value
    terms["block_norm_residual"] = cfg.depth * L * C * (ELEMENTWISE_COST["rmsnorm"] + 1)
    terms["final_norm"] = L * C * ELEMENTWISE_COST["rmsnorm"]
    if cfg.pretraining:
        terms["output_layer"] = 2 * L * C * pd
        terms["output_bias_loss"] = L * pd + 3 * L * pd  # bias add, then MSE (sub, square, sum)
    else:
        terms["head"] = HEADS[cfg.head].forward_flops(head_context(cfg), L)
    return terms


def group_terms(terms: Mapping[str, int]) -> Dict[str, int]:
    """Collapse a term breakdown into gemm / scan / other totals."""
    gemm = sum(v for k, v in terms.items() if k in GEMM_TERMS)
    scan = sum(v for k, v in terms.items() if k in SCAN_TERMS)
    return {"gemm": gemm, "scan": scan, "other": sum(terms.values()) - gemm - scan}


def count_parameters(cfg: FMambaFlopsConfig) -> int:
    """Trainable parameters: projection, blocks (RMSNorm + Mamba2), final norm, output layer
    or head. The positional encoding is a fixed buffer (SPEC §2), so it is not counted."""
    C, pd = cfg.embed_dim, cfg.patch_dim
    total = pd * C + cfg.depth * (C + cfg.mixer.num_parameters()) + C
    if cfg.pretraining:
        total += C * pd + pd
    else:
        total += head_parameters(cfg)
    return total


# --------------------------------------------------------------------------------------------
# Batches and epochs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostSummary:
    """Per-clip and per-epoch cost of one setting (e.g. all tokens vs. brain tokens only)."""

    label: str
    tokens_per_clip: float
    forward_per_clip: float
    terms: Dict[str, int] = field(default_factory=dict)

    @property
    def train_per_clip(self) -> float:
        return TRAIN_TO_FORWARD * self.forward_per_clip

    def per_epoch(self, clips_per_epoch: int, training: bool = True) -> float:
        return clips_per_epoch * (self.train_per_clip if training else self.forward_per_clip)


def batch_forward_flops(
    cfg: FMambaFlopsConfig, lengths: Sequence[int], causal_half: bool = False
) -> Dict[str, int]:
    """Forward FLOPs of a batch whose samples keep ``lengths`` tokens each. Works for the
    batch-shared mask (all lengths equal) and for packed per-sample masks: the scan runs on
    the packed sequence but ``seq_idx`` only resets state, so each sample's cost is that of
    its own length, apart from chunk padding, which packing shares (counted on the total)."""
    totals: Dict[str, int] = {}
    for L in lengths:
        for key, value in fmamba_forward_flops(cfg, L, causal_half).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def packed_forward_flops(
    cfg: FMambaFlopsConfig, lengths: Sequence[int], causal_half: bool = False
) -> Dict[str, int]:
    """Forward FLOPs of one packed sequence holding all ``lengths`` (padding shared)."""
    total_len = int(sum(lengths))
    terms = batch_forward_flops(cfg, lengths, causal_half)
    packed_scan = ssd_scan_flops(total_len, cfg.mixer, causal_half)
    for key in SCAN_TERMS:
        terms[key] = cfg.depth * packed_scan[key]
    return terms


def summarize(
    cfg: FMambaFlopsConfig, label: str, lengths: Sequence[int], causal_half: bool = False
) -> CostSummary:
    """Average per-clip cost of a batch with per-sample kept-token ``lengths``."""
    terms = batch_forward_flops(cfg, lengths, causal_half)
    n = len(lengths)
    return CostSummary(
        label=label,
        tokens_per_clip=sum(lengths) / n,
        forward_per_clip=sum(terms.values()) / n,
        terms={k: v // n for k, v in terms.items()},
    )


def config_for(cfg: FMambaFlopsConfig, **changes) -> FMambaFlopsConfig:
    """A copy of ``cfg`` with some fields changed (validated again)."""
    return replace(cfg, **changes)
