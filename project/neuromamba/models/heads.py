"""Task heads on top of the backbone features (SPEC §7), one registry for ``--clf_head_version``.

A head takes a :class:`BackboneOutput` and returns ``(B, num_outputs)``: class logits for
classification, ``num_outputs=1`` for regression. Every head pools per sample, also when the
backbone packed samples of different lengths into one row.
"""
from __future__ import annotations

from typing import Dict, Optional, Type

import torch
from torch import nn

from .connectivity import ConnectivityHead
from .fmamba import BackboneOutput, mamba_block, run_block
from .head_base import Head, HeadContext
from .layer_flops import ELEMENTWISE_COST, mamba2_layer_flops
from .mamba2 import RMSNorm
from ..paper import CHUNK_SIZE


def mean_pool(out: BackboneOutput, features: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of each sample's kept-token features -> ``(B, C)``."""
    features = out.features if features is None else features
    if out.seq_idx is None:
        return features.mean(dim=1)
    sample = out.seq_idx[0].long()
    sums = features.new_zeros(out.batch_size, features.shape[-1]).index_add(0, sample, features[0])
    return sums / out.lengths.to(features.dtype).unsqueeze(1)


def last_token(out: BackboneOutput, features: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Feature of each sample's last kept token -> ``(B, C)``."""
    features = out.features if features is None else features
    if out.seq_idx is None:
        return features[:, -1]
    ends = torch.cumsum(out.lengths, 0) - 1
    return features[0, ends]


class LinearHead(Head):
    """Average over tokens (the original's AdaptiveAvgPool1d(1)) -> Linear(C, num_outputs)."""

    def __init__(self, embed_dim: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(embed_dim, num_outputs)

    def forward(self, out: BackboneOutput) -> torch.Tensor:
        return self.fc(mean_pool(out))

    @classmethod
    def forward_flops(cls, ctx: HeadContext, seqlen: int) -> int:
        C, K = ctx.embed_dim, ctx.num_outputs
        return seqlen * C + 2 * C * K + K  # the mean over tokens, then Linear(C, K) with bias

    @classmethod
    def num_parameters(cls, ctx: HeadContext) -> int:
        return ctx.embed_dim * ctx.num_outputs + ctx.num_outputs


class MambaHead(Head):
    """``depth`` pre-norm Mamba2 blocks (d_state = C/16) + RMSNorm -> last token -> Linear.

    ``headdim`` defaults to C (2 heads), which always divides the inner width 2C, matching the
    backbone variants' head layout.
    """

    def __init__(
        self,
        embed_dim: int,
        num_outputs: int,
        depth: int = 3,
        d_state: Optional[int] = None,
        headdim: Optional[int] = None,
        chunk_size: int = CHUNK_SIZE,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        d_state = max(1, embed_dim // 16) if d_state is None else d_state
        headdim = embed_dim if headdim is None else headdim
        self.blocks = nn.ModuleList(
            mamba_block(embed_dim, d_state, headdim, chunk_size, drop_rate, layer_idx=i) for i in range(depth)
        )
        self.norm = RMSNorm(embed_dim, eps=1e-5)
        self.fc = nn.Linear(embed_dim, num_outputs)

    def forward(self, out: BackboneOutput) -> torch.Tensor:
        h = out.features
        for block in self.blocks:
            h = run_block(block, h, out.seq_idx)
        return self.fc(last_token(out, self.norm(h)))

    @classmethod
    def from_context(cls, ctx: HeadContext) -> "MambaHead":
        return cls(ctx.embed_dim, ctx.num_outputs, depth=ctx.head_depth, headdim=ctx.head_headdim,
                   chunk_size=ctx.chunk_size)

    @classmethod
    def forward_flops(cls, ctx: HeadContext, seqlen: int) -> int:
        # head_depth pre-norm Mamba2 blocks over all tokens, then Linear(C, K) on the last token
        C, K = ctx.embed_dim, ctx.num_outputs
        per_block = sum(mamba2_layer_flops(seqlen, ctx.head_mixer).values())
        per_block += seqlen * C * (ELEMENTWISE_COST["rmsnorm"] + 1)
        return ctx.head_depth * per_block + 2 * C * K + K

    @classmethod
    def num_parameters(cls, ctx: HeadContext) -> int:
        C, K = ctx.embed_dim, ctx.num_outputs
        return ctx.head_depth * (C + ctx.head_mixer.num_parameters()) + C + C * K + K


def attention_pool(out: BackboneOutput, scores: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted mean of each sample's kept-token features; ``scores`` (B', L)."""
    features = out.features
    if out.seq_idx is None:
        weights = torch.softmax(scores.float(), dim=1).to(features.dtype)
        return (weights.unsqueeze(-1) * features).sum(dim=1)
    sample = out.seq_idx[0].long()
    scores = scores[0].float()
    peak = torch.full((out.batch_size,), -torch.inf, device=scores.device).scatter_reduce(
        0, sample, scores, reduce="amax")
    weights = torch.exp(scores - peak[sample])  # a softmax within each packed sample
    norm = weights.new_zeros(out.batch_size).index_add(0, sample, weights)
    weights = (weights / norm[sample]).to(features.dtype)
    return features.new_zeros(out.batch_size, features.shape[-1]).index_add(
        0, sample, weights.unsqueeze(-1) * features[0])


class AttentionHead(Head):
    """Attention pooling over the kept tokens -> LayerNorm -> Linear.

    Why: the mean over ~1,000 tokens washes a regional signal out (in the learnability
    benchmark the pooled features varied 26x less across clips than the tokens within one),
    so the head learns where to look: one score per token from a learned projection.
    """

    def __init__(self, embed_dim: int, num_outputs: int):
        super().__init__()
        self.score = nn.Linear(embed_dim, 1)
        self.norm = nn.LayerNorm(embed_dim)
        self.fc = nn.Linear(embed_dim, num_outputs)

    def forward(self, out: BackboneOutput) -> torch.Tensor:
        scores = self.score(out.features).squeeze(-1)
        return self.fc(self.norm(attention_pool(out, scores)))

    @classmethod
    def forward_flops(cls, ctx: HeadContext, seqlen: int) -> int:
        # a score per token (Linear(C, 1)), softmax, weighted sum, LayerNorm, Linear(C, K)
        C, K = ctx.embed_dim, ctx.num_outputs
        return (seqlen * (2 * C + 1) + 3 * seqlen + 2 * seqlen * C
                + C * ELEMENTWISE_COST["rmsnorm"] + 2 * C * K + K)

    @classmethod
    def num_parameters(cls, ctx: HeadContext) -> int:
        C, K = ctx.embed_dim, ctx.num_outputs
        return (C + 1) + 2 * C + C * K + K


# The one registry of --clf_head_version: a head is its class and its entry here (its FLOPs,
# parameter count and checks are the class's own).
HEADS: Dict[str, Type[Head]] = {"linear": LinearHead, "mamba": MambaHead, "attention": AttentionHead,
                                "connectivity": ConnectivityHead}


# --clf_head_version auto: each of these heads trained on the same frozen features, the best on
# validation kept (training/head_selection.py). Those that cannot work on the model's tokens
# (the connectivity head on too few parcels or time tokens) are left out by their own check.
AUTO_HEAD = "auto"
AUTO_CANDIDATES = ("linear", "attention", "connectivity")


def auto_candidates(ctx: HeadContext) -> list:
    """The candidate heads that can work on the tokens of ``ctx``."""
    usable = []
    for name in AUTO_CANDIDATES:
        try:
            HEADS[name].check(ctx)
        except ValueError:
            continue
        usable.append(name)
    return usable


def get_head(name: str) -> Type[Head]:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (--clf_head_version); choose one of {sorted(HEADS)}")
    return HEADS[name]


def build_head(name: str, embed_dim: int, num_outputs: int, **kwargs) -> nn.Module:
    """Build a head by its ``--clf_head_version`` name with explicit constructor arguments."""
    cls = get_head(name)
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    return cls(embed_dim, num_outputs, **kwargs)


def build_head_for(name: str, ctx: HeadContext) -> Head:
    """Build a head by its name for a run (what training and checkpoint loading use)."""
    if ctx.num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {ctx.num_outputs}")
    return get_head(name).from_context(ctx)
