"""Pure-PyTorch chunked SSD scan: the reference op behind Mamba2 (no CUDA, no Triton).

Computes, per batch element and head, the selective state-space recurrence

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t (outer) B_t        (state: headdim x d_state)
    y_t = h_t . C_t + D * x_t

with the "state-space duality" chunking of Mamba2: the sequence is cut into chunks of Q
tokens; inside a chunk the recurrence is an attention-like (Q x Q) lower-triangular matmul;
between chunks only the (headdim x d_state) states are carried. Cost O(L * Q), no loop over
tokens (only a cheap loop over chunks for the state passing).

The signature mirrors ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`` so the
Mamba2 module can call either this or the fused kernel with the same arguments.

Numerics: dt, the decays and their cumulative sums stay fp32 even under bf16 autocast; the
segment sums are masked to -inf *before* exp, so exp never sees the (positive) upper
triangle and the backward never produces inf * 0.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["mamba_chunk_scan_combined", "causal_conv1d_ref", "process_dt"]


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types, fp64 stays fp64 (tests run the op in double)."""
    return torch.promote_types(dtype, torch.float32)


def process_dt(
    dt: torch.Tensor,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    dt_limit: Tuple[float, float] = (0.0, math.inf),
) -> torch.Tensor:
    """dt -> fp32 step sizes: add bias, softplus, clamp to dt_limit (as mamba_ssm does)."""
    dt = dt.to(_at_least_fp32(dt.dtype))
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)  # threshold 20, like the kernel's `dt if dt > 20 else softplus(dt)`
    if tuple(dt_limit) != (0.0, math.inf):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _shift_right(t: torch.Tensor, shift: int) -> torch.Tensor:
    """out[:, i] = t[:, i - shift] (zeros for i < shift), time on dim 1."""
    if shift == 0:
        return t
    out = torch.zeros_like(t)
    if shift >= t.shape[1]:
        return out
    out[:, shift:] = t[:, : t.shape[1] - shift]
    return out


def _shift_left(t: torch.Tensor, shift: int) -> torch.Tensor:
    """out[:, i] = t[:, i + shift] (zeros past the end), time on dim 1."""
    if shift == 0:
        return t
    out = torch.zeros_like(t)
    if shift >= t.shape[1]:
        return out
    out[:, : t.shape[1] - shift] = t[:, shift:]
    return out


class _CausalConv1d(torch.autograd.Function):
    """Depthwise causal conv as shifted multiply-adds with a hand-written backward.

    Autograd through slices would allocate and zero a full-size gradient per tap; this keeps
    the backward to a few fused passes. Taps are dropped where ``same_seq[shift]`` is False.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, same_seq):
        width = weight.shape[1]
        out = x * weight[:, width - 1]
        for shift in range(1, width):
            past = _shift_right(x, shift)
            if same_seq is not None:
                past = past * same_seq[shift - 1]
            out.add_(past * weight[:, width - 1 - shift])
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(x, weight, same_seq)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, same_seq = ctx.saved_tensors
        width = weight.shape[1]
        grad_out = grad_out.contiguous()
        grad_x = grad_out * weight[:, width - 1]
        grad_w = torch.empty_like(weight)
        reduce_dims = tuple(range(x.dim() - 1))
        grad_w[:, width - 1] = (grad_out * x).sum(reduce_dims)
        for shift in range(1, width):
            g = grad_out if same_seq is None else grad_out * same_seq[shift - 1]
            grad_x.add_(_shift_left(g * weight[:, width - 1 - shift], shift))
            grad_w[:, width - 1 - shift] = (g * _shift_right(x, shift)).sum(reduce_dims)
        grad_b = grad_out.sum(reduce_dims) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


def causal_conv1d_ref(
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
        raise ValueError(f"causal_conv1d_ref: unsupported activation {activation!r}")
    dtype = torch.promote_types(x.dtype, weight.dtype)  # autocast does not reach custom ops
    x, weight = x.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    same_seq = None
    if seq_idx is not None:
        # same_seq[k-1][b, t] = 1 where token t and token t-k belong to the same sequence.
        same_seq = torch.stack([seq_idx == _shift_right(seq_idx, k)
                                for k in range(1, weight.shape[1])]).unsqueeze(-1).to(dtype)
    out = _CausalConv1d.apply(x, weight, bias, same_seq)
    return F.silu(out) if activation is not None else out


class _StatePassing(torch.autograd.Function):
    """H_c = a_c * H_{c-1} + S_c over chunks c, H_{-1} = h0; returns (H_{c-1} for each c, H_last).

    A hand-written backward: autograd through a Python loop of indexing would build O(c^2)
    zero-filled gradients. States are tiny (h x p x n per chunk), so the loop is cheap.
    """

    @staticmethod
    def forward(ctx, chunk_states, chunk_decay, h0):
        nchunks = chunk_states.shape[1]
        before = torch.empty_like(chunk_states)
        state = h0
        for c in range(nchunks):
            before[:, c] = state
            state = torch.addcmul(chunk_states[:, c], chunk_decay[:, c, :, None, None], state)
        ctx.save_for_backward(chunk_decay, before)
        return before, state

    @staticmethod
    def backward(ctx, grad_before, grad_final):
        chunk_decay, before = ctx.saved_tensors
        nchunks = before.shape[1]
        grad_states = torch.empty_like(before)
        grad_h = grad_final if grad_final is not None else torch.zeros_like(before[:, 0])
        if grad_before is None:
            grad_before = torch.zeros_like(before)
        for c in range(nchunks - 1, -1, -1):
            grad_states[:, c] = grad_h
            grad_h = torch.addcmul(grad_before[:, c], chunk_decay[:, c, :, None, None], grad_h)
        # dL/da_c = <dL/dH_c, H_{c-1}> summed over (p, n); dL/dH_c is grad_states[:, c].
        grad_decay = (grad_states * before).sum(dim=(-1, -2))
        return grad_states, grad_decay, grad_h


def _pad_to_chunks(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) by `pad` tokens at the end."""
    if pad == 0:
        return t
    return torch.cat([t, t.new_zeros((t.shape[0], pad) + tuple(t.shape[2:]))], dim=1)


def mamba_chunk_scan_combined(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    dt_limit: Tuple[float, float] = (0.0, math.inf),
    return_final_states: bool = False,
):
    """Chunked SSD scan.

    Args:
        x: (batch, seqlen, nheads, headdim)
        dt: (batch, seqlen, nheads) raw step sizes (see dt_bias / dt_softplus / dt_limit)
        A: (nheads,) negative decay rates
        B, C: (batch, seqlen, ngroups, d_state); nheads must be a multiple of ngroups
        chunk_size: tokens per chunk
        D: (nheads,) or (nheads, headdim) skip connection
        z: (batch, seqlen, nheads, headdim) gate: out = y * silu(z)
        initial_states: (batch, nheads, headdim, d_state) state before the first token
        seq_idx: (batch, seqlen) int, non-decreasing along time; the state is reset wherever it
            changes (mamba_ssm semantics: initial_states only reach tokens with seq_idx 0)
    Returns:
        out (batch, seqlen, nheads, headdim) in x's dtype, and the final states
        (batch, nheads, headdim, d_state) fp32 when return_final_states.
    """
    batch, seqlen, nheads, headdim = x.shape
    if B.dim() != 4 or B.shape[:2] != (batch, seqlen) or C.shape != B.shape:
        raise ValueError(f"B and C must be (batch, seqlen, ngroups, d_state) = "
                         f"({batch}, {seqlen}, g, n); got {tuple(B.shape)} and {tuple(C.shape)}")
    ngroups, dstate = B.shape[2], B.shape[3]
    if nheads % ngroups != 0:
        raise ValueError(f"nheads ({nheads}) must be a multiple of ngroups ({ngroups})")
    if dt.shape != (batch, seqlen, nheads) or A.shape != (nheads,):
        raise ValueError(f"dt must be {(batch, seqlen, nheads)} and A {(nheads,)}; "
                         f"got {tuple(dt.shape)} and {tuple(A.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    heads_per_group = nheads // ngroups
    out_dtype = x.dtype

    dt = process_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b, l, h) fp32
    x_in = x
    # Padding with dt = 0 makes the extra tokens decay-free and input-free: results unchanged.
    pad = (-seqlen) % chunk_size
    x, dt, B, C = (_pad_to_chunks(t, pad) for t in (x, dt, B, C))
    if seq_idx is not None:
        if seq_idx.shape != (batch, seqlen):
            raise ValueError(f"seq_idx must be (batch, seqlen) = {(batch, seqlen)}, "
                             f"got {tuple(seq_idx.shape)}")
        if pad:
            seq_idx = torch.cat([seq_idx, seq_idx[:, -1:].expand(batch, pad)], dim=1)
    nchunks = x.shape[1] // chunk_size
    Q = chunk_size

    # Chunked views. Heads are laid out (group, head-in-group) so B/C are never repeated.
    x = x.view(batch, nchunks, Q, nheads, headdim)
    dt = dt.view(batch, nchunks, Q, nheads)
    B = B.view(batch, nchunks, Q, ngroups, dstate).transpose(2, 3)  # (b, c, g, Q, n)
    C = C.view(batch, nchunks, Q, ngroups, dstate).transpose(2, 3)  # (b, c, g, Q, n)

    # Cumulative log-decay inside each chunk, fp32: dA_cs[..., t] = sum_{s<=t} dt_s * A.
    dA_cs = torch.cumsum((dt * A.to(dt.dtype)).transpose(2, 3), dim=-1)  # (b, c, h, Q)
    x_dt = (x * dt.unsqueeze(-1).to(x.dtype)).transpose(2, 3)  # (b, c, h, Q, p)

    seq = None if seq_idx is None else seq_idx.view(batch, nchunks, Q)

    # 1. Intra-chunk (diagonal blocks): y_t = sum_{s<=t} (C_t . B_s) exp(cs_t - cs_s) dt_s x_s.
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    if seq is not None:
        causal = causal & (seq.unsqueeze(-1) == seq.unsqueeze(-2)).unsqueeze(2)  # (b,c,1,Q,Q)
    segsum = dA_cs.unsqueeze(-1) - dA_cs.unsqueeze(-2)  # (b, c, h, Q, Q)
    decay = torch.exp(segsum.masked_fill(~causal, -math.inf))
    CB = torch.matmul(C, B.transpose(-1, -2))  # (b, c, g, Q, Q)
    scores = decay.view(batch, nchunks, ngroups, heads_per_group, Q, Q) * CB.unsqueeze(3)
    scores = scores.view(batch, nchunks, nheads, Q, Q).to(x_dt.dtype)
    y = torch.matmul(scores, x_dt)  # (b, c, h, Q, p)

    # 2. State at the end of each chunk from its own tokens only.
    decay_to_end = torch.exp(dA_cs[..., -1:] - dA_cs)  # (b, c, h, Q)
    if seq is not None:
        decay_to_end = decay_to_end * (seq == seq[..., -1:]).unsqueeze(2)
    x_w = (x_dt * decay_to_end.unsqueeze(-1).to(x_dt.dtype))
    x_w = x_w.view(batch, nchunks, ngroups, heads_per_group, Q, headdim)
    # (b, c, g, hpg*p, Q) @ (b, c, g, Q, n): all heads of a group in one matmul.
    x_w = x_w.transpose(-1, -2).reshape(batch, nchunks, ngroups, heads_per_group * headdim, Q)
    chunk_states = torch.matmul(x_w, B.to(x_w.dtype)).to(dt.dtype)
    chunk_states = chunk_states.view(batch, nchunks, nheads, headdim, dstate)

    # 3. Pass states across chunks (sequential over chunks, tiny tensors).
    chunk_decay = torch.exp(dA_cs[..., -1])  # (b, c, h)
    if seq is not None:
        end_seq = seq[..., -1]  # (b, c)
        prev_end_seq = F.pad(end_seq[:, :-1], (1, 0))  # seq before chunk 0 counts as 0
        chunk_decay = chunk_decay * (end_seq == prev_end_seq).unsqueeze(-1)
    if initial_states is None:
        initial_states = chunk_states.new_zeros(batch, nheads, headdim, dstate)
    elif initial_states.shape != (batch, nheads, headdim, dstate):
        raise ValueError(f"initial_states must be {(batch, nheads, headdim, dstate)}, "
                         f"got {tuple(initial_states.shape)}")
    states_before, final_state = _StatePassing.apply(
        chunk_states.contiguous(), chunk_decay.contiguous(), initial_states.to(dt.dtype))

    # 4. Contribution of the carried state: y_t += exp(cs_t) C_t . state_before_chunk.
    s = states_before.view(batch, nchunks, ngroups, heads_per_group, headdim, dstate)
    s = s.permute(0, 1, 2, 5, 3, 4).reshape(batch, nchunks, ngroups, dstate,
                                             heads_per_group * headdim)
    y_carry = torch.matmul(C, s.to(C.dtype))
    decay_from_start = torch.exp(dA_cs)  # (b, c, h, Q)
    if seq is not None:
        start_seq = F.pad(seq[:, :-1, -1], (1, 0))  # seq of the token before each chunk
        decay_from_start = decay_from_start * (seq == start_seq.unsqueeze(-1)).unsqueeze(2)
    y_carry = y_carry.view(batch, nchunks, ngroups, Q, heads_per_group, headdim)
    y_carry = y_carry.permute(0, 1, 2, 4, 3, 5).reshape(batch, nchunks, nheads, Q, headdim)
    y = y + y_carry * decay_from_start.unsqueeze(-1)

    y = y.transpose(2, 3).reshape(batch, nchunks * Q, nheads, headdim)[:, :seqlen]
    if D is not None:
        D = D.to(dt.dtype)
        y = y + x_in * (D.unsqueeze(-1) if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z)
    out = y.to(out_dtype)
    return (out, final_state) if return_final_states else out
