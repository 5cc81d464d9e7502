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
from .mamba2 import RMSNorm


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


class LinearHead(nn.Module):
    """Average over tokens (the original's AdaptiveAvgPool1d(1)) -> Linear(C, num_outputs)."""

    def __init__(self, embed_dim: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(embed_dim, num_outputs)

    def forward(self, out: BackboneOutput) -> torch.Tensor:
        return self.fc(mean_pool(out))


class MambaHead(nn.Module):
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
        chunk_size: int = 256,
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


class AttentionHead(nn.Module):
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


HEADS: Dict[str, Type[nn.Module]] = {"linear": LinearHead, "mamba": MambaHead, "attention": AttentionHead,
                                     "connectivity": ConnectivityHead}


def build_head(name: str, embed_dim: int, num_outputs: int, **kwargs) -> nn.Module:
    """Build a head by its ``--clf_head_version`` name."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (--clf_head_version); choose one of {sorted(HEADS)}")
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    return HEADS[name](embed_dim, num_outputs, **kwargs)
