"""What every task head is: built from a :class:`HeadContext`, able to refuse a context it cannot
work in, and counting its own FLOPs and parameters. A new head is a subclass registered in
``heads.HEADS``; nothing else in the package names heads one by one."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import nn

from .layer_flops import Mamba2Dims
from ..paper import CHUNK_SIZE


@dataclass(frozen=True)
class HeadContext:
    """The run a head is built for: the backbone's width, the outputs, the model's token grid
    (a static-image time token first, if the input has one) and the numeric knobs of Mamba2
    blocks (the Mamba head's)."""

    embed_dim: int
    num_outputs: int
    token_grid: Tuple[int, ...] = ()
    static_time_tokens: int = 0
    chunk_size: int = CHUNK_SIZE
    expand: int = 2
    ngroups: int = 1
    d_conv: int = 4
    head_depth: int = 3
    head_headdim: Optional[int] = None  # Mamba head blocks: default C (2 heads), d_state = C/16

    @property
    def num_tokens(self) -> int:
        return math.prod(int(n) for n in self.token_grid)

    @property
    def head_mixer(self) -> Mamba2Dims:
        headdim = self.embed_dim if self.head_headdim is None else self.head_headdim
        return Mamba2Dims(self.embed_dim, max(1, self.embed_dim // 16), headdim, self.expand,
                          self.ngroups, self.d_conv, self.chunk_size)


class Head(nn.Module):
    """Base of the task heads: ``forward(BackboneOutput) -> (B, num_outputs)``."""

    @classmethod
    def from_context(cls, ctx: HeadContext) -> "Head":
        cls.check(ctx)
        return cls(ctx.embed_dim, ctx.num_outputs)

    @classmethod
    def check(cls, ctx: HeadContext) -> None:
        """Raise ``ValueError`` (one sentence) when the head cannot work on ``ctx``'s tokens."""

    @classmethod
    def forward_flops(cls, ctx: HeadContext, seqlen: int) -> int:
        """FLOPs of the head for one sample of ``seqlen`` kept tokens."""
        raise NotImplementedError(f"{cls.__name__} does not count its FLOPs")

    @classmethod
    def num_parameters(cls, ctx: HeadContext) -> int:
        raise NotImplementedError(f"{cls.__name__} does not count its parameters")
