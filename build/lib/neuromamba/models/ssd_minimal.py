"""Reference ops of the Mamba2 layer, written as the papers write them: short, plain PyTorch,
autograd only, no tiling and no hand-written backward. Too slow for training; they are what
the fast ops in :mod:`neuromamba.models.ops` are tested against (``tests/models``).

* :func:`sequential_scan`: the selective state-space recurrence, one token at a time;
* :func:`ssd_minimal`: the same recurrence computed as the Mamba2 paper's chunked "state space
  duality" (SSD): within a chunk an attention-like masked matmul, between chunks a recurrence
  over the chunk states only;
* :func:`causal_conv1d_minimal`: the depthwise causal conv as ``torch.nn.functional.conv1d``;
* :func:`gated_rms_norm_minimal`: RMSNorm over groups of channels with a SiLU gate.

Shapes: x (batch, seqlen, nheads, headdim); dt (batch, seqlen, nheads), already positive;
A (nheads,) negative; B, C (batch, seqlen, ngroups, d_state) with nheads a multiple of ngroups.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _heads(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """(b, l, g, n) -> (b, l, h, n): each group's B or C shared by its heads."""
    return t.repeat_interleave(nheads // t.shape[2], dim=2)


def sequential_scan(x, dt, A, B, C, D=None, z=None, seq_idx=None, initial_states=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T (h reset where ``seq_idx`` changes);
    y_t = h_t C_t + D x_t; then y * silu(z). Returns (y, final state (b, h, p, n))."""
    batch, seqlen, nheads, headdim = x.shape
    Bh, Ch = _heads(B, nheads), _heads(C, nheads)
    state = (x.new_zeros(batch, nheads, headdim, B.shape[-1]) if initial_states is None
             else initial_states.to(x.dtype))
    outs = []
    for t in range(seqlen):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        if seq_idx is not None:
            before = seq_idx[:, t - 1] if t > 0 else torch.zeros_like(seq_idx[:, 0])
            decay = decay * (seq_idx[:, t] == before).to(x.dtype)[:, None]
        state = decay[..., None, None] * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        y = (state * Ch[:, t, :, None, :]).sum(-1)
        if D is not None:
            y = y + x[:, t] * (D[:, None] if D.dim() == 1 else D)
        outs.append(y)
    y = torch.stack(outs, dim=1)
    return (y * F.silu(z) if z is not None else y), state


def segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above the diagonal: the
    log of the decay from token j to token i inside a chunk (the mask is applied before any
    exp, so exp never sees an overflowing positive sum)."""
    length = a.shape[-1]
    cumsum = torch.cumsum(a, dim=-1)
    out = cumsum[..., :, None] - cumsum[..., None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=a.device).tril()
    return out.masked_fill(~causal, float("-inf"))


def ssd_minimal(x, dt, A, B, C, chunk_size: int, D=None, z=None, initial_states=None):
    """The SSD algorithm, chunk by chunk, as the Mamba2 paper lays it out (no ``seq_idx``).

    With a = dt * A the log decay per token, X = x * dt the scaled input:
      1. diagonal blocks: Y_diag = (C B^T * exp(segsum(a))) X within each chunk;
      2. each chunk's final state from its own tokens: S_c = sum_t exp(a_t+1..end) B_t X_t^T;
      3. states between chunks: S'_c = exp(sum a over chunk c) S'_{c-1} + S_c (a recurrence
         over chunks, written here as one more segsum over the chunk totals);
      4. off-diagonal blocks: Y_off = C_t exp(a_start..t) S'_{c-1}.
    Returns (y, final state (b, h, p, n))."""
    batch, seqlen, nheads, headdim = x.shape
    pad = (-seqlen) % chunk_size  # dt = 0 tokens: no input, no decay
    def chunks(t):
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) if pad else t
        return t.reshape(batch, -1, chunk_size, *t.shape[2:])
    X = chunks(x * dt[..., None])                        # (b, c, l, h, p)
    a = chunks(dt * A).permute(0, 3, 1, 2)               # (b, h, c, l)
    Bc, Cc = chunks(_heads(B, nheads)), chunks(_heads(C, nheads))  # (b, c, l, h, n)
    a_cum = torch.cumsum(a, dim=-1)

    L = torch.exp(segsum(a))                             # (b, h, c, l, l)
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, L, X)

    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)    # (b, h, c, l)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_to_end, X)

    h0 = (torch.zeros_like(states[:, :1]) if initial_states is None
          else initial_states[:, None].to(states.dtype))
    states = torch.cat([h0, states], dim=1)              # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    before, final = carried[:, :-1], carried[:, -1]

    decay_from_start = torch.exp(a_cum)                  # (b, h, c, l)
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, before, decay_from_start)

    y = (y_diag + y_off).reshape(batch, -1, nheads, headdim)[:, :seqlen]
    if D is not None:
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    return (y * F.silu(z) if z is not None else y), final


def causal_conv1d_minimal(x, weight, bias=None, activation: Optional[str] = None):
    """Depthwise causal conv over time: x (b, l, d), weight (d, width) -> (b, l, d)."""
    width = weight.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=width - 1,
                 groups=weight.shape[0])[..., : x.shape[1]].transpose(1, 2)
    return F.silu(y) if activation in ("silu", "swish") else y


def gated_rms_norm_minimal(x, z, weight, eps: float = 1e-5, group_size: Optional[int] = None,
                           norm_before_gate: bool = False):
    """RMSNorm over groups of ``group_size`` channels, gated by silu(z) before (default) or
    after the normalisation; z None: no gate."""
    group_size = group_size or x.shape[-1]
    if z is not None and not norm_before_gate:
        x = x * F.silu(z)
    g = x.unflatten(-1, (-1, group_size))
    y = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2) * weight
    if z is not None and norm_before_gate:
        y = y * F.silu(z)
    return y
