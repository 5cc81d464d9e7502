"""A connectivity head: the correlations between parcels' time courses, read sparsely.

Why: a label carried by two distant regions sharing a time course (coupling) is in no single
token, and pooling tokens averages the two courses away. In the learnability benchmark the
signal is plain (the planted pair's correlation alone separates the test subjects at AUC 1.0),
yet every dense reader of the parcel correlations stays at chance: the logistic regression over
all 18,721 pairs (0.58) and a linear layer over them. With 48 training subjects, the planted
pair's class difference (t ~ 5-6) barely clears the largest of the other pairs' (t ~ 4-5), and
a dense reader spreads its weight over all of them. Screening the pairs one by one finds it.

So this head reads the correlations with weights that must sum to one, a softmax over learned
per-pair scores (both signs): gradient steps on the scores are multiplicative on the weights
(exponentiated gradient, Winnow), which needs samples in log(pairs) for a few relevant pairs
where an additive linear layer needs them in pairs. The scores are multiplied by
``score_scale`` so that the usual learning rate moves them at screening speed.

Layout (SPEC §2: patches x time tokens, time fastest):

1. each token gives ``channels`` values from its feature (a token holds several frames);
2. patches pool into parcels (:func:`parcel_blocks`, at most 8 a side: 512 parcels), and
   each parcel's course is centred over time; ``static_time_tokens`` leading time tokens (a
   static-image token) are part of no course;
3. the correlation of every parcel pair; ``num_outputs`` softmax-weighted sums of them
   (signed) -> Linear -> the outputs. Parcels without kept tokens correlate 0.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .fmamba import BackboneOutput
from .head_base import Head, HeadContext


CHANNELS = 4  # values per token in a parcel's course (a token holds several frames)


def parcel_blocks(token_grid: Sequence[int], max_side: int = 8) -> Tuple[int, int, int]:
    """Patches per parcel along each spatial axis: the token grid pooled to at most
    ``max_side`` parcels a side (48^3 clips: one patch per parcel; 96^3: 2x2x2 patches)."""
    return tuple(-(-int(g) // max_side) for g in token_grid[:3])


def parcel_grid(token_grid: Sequence[int]) -> Tuple[int, int, int]:
    """Parcels along each spatial axis (the last block may hang over the token grid)."""
    return tuple(-(-int(g) // b) for g, b in zip(token_grid[:3], parcel_blocks(token_grid)))


class ConnectivityHead(Head):
    """``(B, num_outputs)`` from the parcel correlations of each sample (see the module's text)."""

    def __init__(self, embed_dim: int, num_outputs: int, token_grid: Sequence[int],
                 static_time_tokens: int = 0, channels: int = CHANNELS, score_scale: float = 20.0):
        super().__init__()
        self.token_grid = tuple(int(v) for v in token_grid)
        self.static_time_tokens = int(static_time_tokens)
        self.check(HeadContext(embed_dim, num_outputs, self.token_grid, self.static_time_tokens))
        self.blocks = parcel_blocks(self.token_grid)
        self.parcel_grid = parcel_grid(self.token_grid)
        parcels = math.prod(self.parcel_grid)
        self.register_buffer("pairs", torch.triu_indices(parcels, parcels, offset=1), persistent=False)
        self.course = nn.Linear(embed_dim, channels)
        self.score_scale = float(score_scale)
        # one score per (readout, sign, pair); zeros: every pair weighs the same at the start
        self.pair_scores = nn.Parameter(torch.zeros(num_outputs, 2 * self.pairs.shape[1]))
        self.fc = nn.Linear(num_outputs, num_outputs)

    @classmethod
    def check(cls, ctx: HeadContext) -> None:
        grid, static = tuple(int(v) for v in ctx.token_grid), int(ctx.static_time_tokens)
        if len(grid) != 4 or grid[3] - static < 2:
            raise ValueError(f"the connectivity head correlates time courses, so it needs >= 2 time "
                             f"tokens of fluctuations per patch; token grid {grid} with {static} "
                             f"static time token(s)")
        parcels = math.prod(parcel_grid(grid))
        if parcels < 2:  # no pair: every sample would get the bias alone
            raise ValueError(f"the connectivity head needs >= 2 parcels; token grid {grid} gives "
                             f"{parcels} (0 pairs: every subject would get the same prediction)")

    @classmethod
    def from_context(cls, ctx: HeadContext) -> "ConnectivityHead":
        return cls(ctx.embed_dim, ctx.num_outputs, ctx.token_grid, ctx.static_time_tokens)

    @staticmethod
    def _shape(ctx: HeadContext) -> Tuple[int, int, int, int]:
        """(channels per token, parcels, parcel pairs, values per parcel course); the course
        counts every time token (an upper bound when a static-image token is skipped)."""
        parcels = math.prod(parcel_grid(ctx.token_grid))
        return CHANNELS, parcels, parcels * (parcels - 1) // 2, int(ctx.token_grid[3]) * CHANNELS

    @classmethod
    def forward_flops(cls, ctx: HeadContext, seqlen: int) -> int:
        # channel values of every grid token (Linear(C, K) on the scattered grid), parcel sums,
        # centring and norms, the parcel-by-parcel correlation matmul, the softmax over the
        # signed pair scores, the weighted sums, Linear(K, K)
        C, K, N = ctx.embed_dim, ctx.num_outputs, ctx.num_tokens
        channels, parcels, pairs, course = cls._shape(ctx)
        return (2 * N * C * channels + N * channels + 6 * parcels * course
                + 2 * parcels * parcels * course + K * 2 * pairs * 4 + 2 * K * 2 * pairs + 2 * K * K + K)

    @classmethod
    def num_parameters(cls, ctx: HeadContext) -> int:
        C, K = ctx.embed_dim, ctx.num_outputs
        channels, _, pairs, _ = cls._shape(ctx)
        return C * channels + channels + K * 2 * pairs + K * K + K

    def parcel_courses(self, out: BackboneOutput) -> torch.Tensor:
        """``(B, parcels, T' * channels)``: each parcel's course, centred over time (0 for a
        parcel without kept tokens)."""
        features = out.to_grid(out.features)  # (B, N, C), dropped tokens 0
        kept = out.to_grid(torch.ones_like(out.features[..., :1])).float()  # (B, N, 1)
        b, (d, h, w, t), skip = features.shape[0], self.token_grid, self.static_time_tokens
        values = (self.course(features).float() * kept).view(b, d, h, w, t, -1)[..., skip:, :]
        kept = kept.view(b, d, h, w, t, 1)[..., skip:, :]
        # sum the patches of each parcel (the grid padded to whole blocks with nothing)
        pads = [0, 0, 0, 0] + sum(([0, -g % k] for g, k in zip((w, h, d), self.blocks[::-1])), [])
        values, kept = F.pad(values, pads), F.pad(kept, pads)
        (bd, bh, bw), (pd, ph, pw) = self.blocks, self.parcel_grid
        pool = lambda x: x.view(b, pd, bd, ph, bh, pw, bw, *x.shape[-2:]).sum((2, 4, 6)).flatten(1, 3)  # noqa: E731
        values, kept = pool(values), pool(kept)  # (B, parcels, T', K) and (B, parcels, T', 1)
        mean = values.sum(2, keepdim=True) / kept.sum(2, keepdim=True).clamp_min(1)
        return ((values / kept.clamp_min(1) - mean) * (kept > 0)).flatten(2)

    def correlations(self, out: BackboneOutput) -> torch.Tensor:
        """``(B, pairs)``: correlation of every parcel pair's courses (upper triangle)."""
        courses = self.parcel_courses(out)
        unit = courses / courses.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return (unit @ unit.transpose(1, 2))[:, self.pairs[0], self.pairs[1]]

    def forward(self, out: BackboneOutput) -> torch.Tensor:
        corr = self.correlations(out)
        signed = torch.cat([corr, -corr], dim=-1)  # (B, 2 * pairs)
        weights = torch.softmax(self.score_scale * self.pair_scores.float(), dim=-1)  # (outputs, 2 * pairs)
        return self.fc((signed @ weights.t()).to(self.fc.weight.dtype))
