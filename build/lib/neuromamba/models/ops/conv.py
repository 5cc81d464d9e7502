"""The depthwise causal conv (+ SiLU) of Mamba2, fast on CPU: shifted multiply-adds a tile of
tokens at a time, with a hand-written backward. Reference: ``ssd_minimal.causal_conv1d_minimal``."""
from typing import Optional

import torch
import torch.nn.functional as F

import neuromamba.models.ops.tiles as _t


class _CausalConv1d(torch.autograd.Function):
    """Depthwise causal conv (+ SiLU) as shifted multiply-adds with a hand-written backward.

    Each tap is one in-place multiply-add on a time-shifted slice (no padded copies; autograd
    through slices would allocate a zero-filled full-size gradient per tap), done tile by tile
    along time so a tile's taps and its activation hit the cache. Taps are dropped where
    ``same_seq[shift - 1]`` is 0 (packed-sequence boundaries).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, same_seq, silu):
        seqlen, width = x.shape[1], weight.shape[1]
        pre = torch.empty_like(x)  # the conv output (before SiLU)
        out = torch.empty_like(x) if silu else pre
        for start, stop in _t.tiles(seqlen):
            tile = pre[:, start:stop]
            if bias is None:
                torch.mul(x[:, start:stop], weight[:, width - 1], out=tile)
            else:
                torch.addcmul(bias, x[:, start:stop], weight[:, width - 1], out=tile)
            for shift in range(1, width):
                lo = max(start, shift)  # outputs t in [lo, stop) read x[t - shift]
                if lo >= stop:
                    continue
                past = x[:, lo - shift: stop - shift]
                if same_seq is not None:
                    past = past * same_seq[shift - 1][:, lo:stop]
                pre[:, lo:stop].addcmul_(past, weight[:, width - 1 - shift])
            if silu:
                torch.ops.aten.silu.out(tile, out=out[:, start:stop])
        ctx.save_for_backward(x, weight, same_seq, pre if silu else None)
        ctx.has_bias, ctx.silu = bias is not None, silu
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, same_seq, pre = ctx.saved_tensors
        seqlen, width = x.shape[1], weight.shape[1]
        grad_out = grad_out.contiguous()
        grad_pre = torch.empty_like(grad_out) if ctx.silu else grad_out
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight)
        grad_b = torch.zeros_like(weight[:, 0]) if ctx.has_bias else None
        # Ascending tiles: a tile sets its own grad_x rows, then adds its taps' contributions to
        # rows at or before its end (set by this tile or an earlier one).
        for start, stop in _t.tiles(seqlen):
            g = grad_pre[:, start:stop]
            if ctx.silu:
                torch.ops.aten.silu_backward.grad_input(grad_out[:, start:stop], pre[:, start:stop],
                                                        grad_input=g)
            torch.mul(g, weight[:, width - 1], out=grad_x[:, start:stop])
            grad_w[:, width - 1] += _t.channel_dot(g, x[:, start:stop])
            if grad_b is not None:
                grad_b += g.sum(tuple(range(g.dim() - 1)))
            for shift in range(1, width):
                lo = max(start, shift)
                if lo >= stop:
                    continue
                gs = grad_pre[:, lo:stop]
                if same_seq is not None:
                    gs = gs * same_seq[shift - 1][:, lo:stop]
                grad_x[:, lo - shift: stop - shift].addcmul_(gs, weight[:, width - 1 - shift])
                grad_w[:, width - 1 - shift] += _t.channel_dot(gs, x[:, lo - shift: stop - shift])
        return grad_x, grad_w, grad_b, None, None


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """Causal depthwise conv over time on a (batch, seqlen, dim) tensor; weight (dim, width).

    Equals ``nn.Conv1d(groups=dim, padding=width-1)`` cut to the first seqlen outputs, written
    as `width` shifted multiply-adds so it needs no transposes and can drop taps that cross a
    packed-sequence boundary (``seq_idx``), as ``causal_conv1d_fn`` does.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"causal_conv1d: unsupported activation {activation!r}")
    dtype = torch.promote_types(x.dtype, weight.dtype)  # autocast does not reach custom ops
    # Contiguous first: on a column slice of a wider tensor (such as in_proj's output) the
    # shifted multiply-adds run ~3x slower than a copy plus contiguous passes (0.12 s against
    # 0.046 s forward at 41k tokens, Base layer, 1 thread). No-op on a contiguous input.
    x, weight = x.to(dtype).contiguous(), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    same_seq = None
    if seq_idx is not None:
        # same_seq[k-1][b, t] = 1 where token t and token t-k belong to the same sequence.
        same_seq = torch.stack([seq_idx == _t.shift_right(seq_idx, k)
                                for k in range(1, weight.shape[1])]).unsqueeze(-1).to(dtype)
    return _CausalConv1d.apply(x, weight, bias, same_seq, activation is not None)
