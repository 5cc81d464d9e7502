"""Pure-PyTorch chunked SSD scan, fast on CPU: the op behind Mamba2's pure path (no CUDA, no
Triton). Reference: ``ssd_minimal.ssd_minimal`` and ``ssd_minimal.sequential_scan``.

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

import neuromamba.models.ops.tiles as _t

__all__ = ["mamba_chunk_scan_combined", "process_dt"]


def process_dt(
    dt: torch.Tensor,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    dt_limit: Tuple[float, float] = (0.0, math.inf),
) -> torch.Tensor:
    """dt -> fp32 step sizes: add bias, softplus, clamp to dt_limit (as mamba_ssm does)."""
    dt = dt.to(_t.at_least_fp32(dt.dtype))
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)  # threshold 20, like the kernel's `dt if dt > 20 else softplus(dt)`
    if tuple(dt_limit) != (0.0, math.inf):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def _pass_states(chunk_states, chunk_decay, h0):
    """H_c = a_c * H_{c-1} + S_c over chunks c, with H_{-1} = h0.

    chunk_states (b, c, h, p, n), chunk_decay a (b, c, h). Returns the state *before* each
    chunk (b, c, h, p, n) and the final state. A loop over chunks only (states are small),
    one fused multiply-add per chunk written straight into its slot.
    """
    batch, nchunks = chunk_states.shape[:2]
    states = chunk_states.new_empty(batch, nchunks + 1, *chunk_states.shape[2:])
    states[:, 0] = h0
    # unbind makes every chunk's view in one call: indexing inside the loop cost more than
    # the (small) multiply-adds themselves.
    new, decay, slots = chunk_states.unbind(1), chunk_decay[..., None, None].unbind(1), states.unbind(1)
    for c in range(nchunks):
        torch.addcmul(new[c], decay[c], slots[c], out=slots[c + 1])
    return states[:, :nchunks], states[:, nchunks]


def _pass_states_backward(chunk_decay, before, grad_before, grad_final):
    """Adjoint of _pass_states: returns d/d(chunk_states), d/d(chunk_decay), d/d(h0).

    dL/dH_c = dL/d before_{c+1} + a_{c+1} dL/dH_{c+1}, and dL/dH_last = grad_final.
    """
    nchunks = before.shape[1]
    decay = chunk_decay[..., None, None]
    grad_states = torch.empty_like(before)  # dL/dH_c = dL/dS_c
    grad_states[:, nchunks - 1] = grad_final
    incoming, decays, slots = grad_before.unbind(1), decay.unbind(1), grad_states.unbind(1)
    for c in range(nchunks - 2, -1, -1):
        torch.addcmul(incoming[c + 1], decays[c + 1], slots[c + 1], out=slots[c])
    grad_h0 = torch.addcmul(grad_before[:, 0], decay[:, 0], grad_states[:, 0])
    grad_decay = (grad_states * before).sum(dim=(-1, -2))  # <dL/dH_c, H_{c-1}>
    return grad_states, grad_decay, grad_h0


def _chunk_masks(seq_idx, batch, nchunks, Q, device):
    """Masks that implement the causal structure and the packed-sequence resets.

    Returns (intra (.., Q, Q) bool, to_end (b,c,Q) or None, from_start (b,c,Q) or None,
    carry (b,c) or None): pairs (t, s) inside a chunk that interact; tokens that reach the
    chunk's end state; tokens the carried state reaches; chunks the previous state survives.
    """
    causal = torch.ones(Q, Q, dtype=torch.bool, device=device).tril()
    if seq_idx is None:
        return causal, None, None, None
    seq = seq_idx.reshape(batch, nchunks, Q)
    intra = (causal & (seq.unsqueeze(-1) == seq.unsqueeze(-2))).unsqueeze(2)  # (b,c,1,Q,Q)
    end_seq = seq[..., -1]  # (b, c)
    start_seq = F.pad(end_seq[:, :-1], (1, 0))  # sequence of the token before each chunk (0 first)
    to_end = seq == end_seq.unsqueeze(-1)
    from_start = seq == start_seq.unsqueeze(-1)
    carry = end_seq == start_seq
    return intra, to_end, from_start, carry


class _ChunkScan(torch.autograd.Function):
    """The SSD scan on chunk-aligned inputs, with a hand-written backward.

    Per (batch, chunk, head), with cs = cumsum(dt * A) inside the chunk (fp32):
        Xd    = dt * x                                    (Q, p)
        M     = (C B^T) o exp(cs_t - cs_s) [s <= t]        (Q, Q)
        y     = M Xd + (exp(cs) o C) S_prev^T + D x        (Q, p)
        S     = Xd^T (exp(cs_end - cs) o B)                (p, n)   the chunk's own end state
        S_prev: the states passed along chunks by _pass_states.
    Autograd through these would store and revisit many (Q, Q) and (L, h, p) intermediates;
    the backward below touches each big tensor a few times only. Matmuls run in the autocast
    dtype when autocast is on (decays stay fp32); autocast itself is off inside.
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, seq_idx, chunk_size):
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            mm_dtype = torch.get_autocast_dtype(device_type)
        else:
            mm_dtype = x.dtype
        with torch.autocast(device_type, enabled=False):
            return _ChunkScan._forward(ctx, x, dt, A, B, C, D, h0, seq_idx, chunk_size, mm_dtype)

    @staticmethod
    def _forward(ctx, x, dt, A, B, C, D, h0, seq_idx, Q, mm_dtype):
        batch, seqlen, nheads, headdim = x.shape
        ngroups, dstate = B.shape[2:]
        nchunks, rep = seqlen // Q, nheads // ngroups
        f32 = dt.dtype  # decays and states: fp32 (fp64 when the inputs are fp64)
        dev = x.device
        intra, to_end, from_start, carry = _chunk_masks(seq_idx, batch, nchunks, Q, dev)
        by_group = (batch, nchunks, ngroups, rep)  # heads split as (group, head in group)

        xc = x.reshape(batch, nchunks, Q, nheads, headdim)  # a view for Mamba2's inputs
        dtc = dt.view(batch, nchunks, Q, nheads)
        cs = torch.cumsum((dtc * A).transpose(2, 3).contiguous(), dim=-1)  # (b, c, h, Q)
        Bg = B.reshape(batch, nchunks, Q, ngroups, dstate).transpose(2, 3).to(mm_dtype)
        Cg = C.reshape(batch, nchunks, Q, ngroups, dstate).transpose(2, 3).to(mm_dtype)
        Bg, Cg = Bg.contiguous(), Cg.contiguous()  # (b, c, g, Q, n)

        # The output of a chunk is one matmul:  y = [M | Ce] @ [Xd ; S_prev^T]  where
        # M (Q x Q) mixes the chunk's own tokens and Ce = exp(cs) o C (Q x n) reads the state
        # carried in. Both operands are assembled in place; the backward reuses the pairing.
        lhs = torch.empty(*by_group, Q, Q + dstate, dtype=mm_dtype, device=dev)
        rhs = torch.empty(batch, nchunks, nheads, Q + dstate, headdim, dtype=mm_dtype,
                          device=dev)
        Xd = rhs[..., :Q, :]  # (b, c, h, Q, p)
        torch.mul(xc, dtc.unsqueeze(-1), out=Xd.transpose(2, 3))  # Xd = dt o x, one pass

        # Intra-chunk decays: -inf above the diagonal (and across sequences) *before* exp.
        decay = cs.unsqueeze(-1) - cs.unsqueeze(-2)  # (b, c, h, Q, Q)
        decay.masked_fill_(~intra, -math.inf).exp_()
        G = torch.matmul(Cg, Bg.transpose(-1, -2))  # (b, c, g, Q, Q)
        torch.mul(decay.view(*by_group, Q, Q), G.unsqueeze(3), out=lhs[..., :Q])

        # Chunk end states: fold the decay-to-end into B (n < p: the cheaper side).
        w_end = torch.exp(cs[..., -1:] - cs)  # (b, c, h, Q)
        if to_end is not None:
            w_end = w_end * to_end.unsqueeze(2)
        Bw = (Bg.unsqueeze(3) * w_end.view(*by_group, Q, 1)).to(mm_dtype)
        Bw = Bw.view(batch, nchunks, nheads, Q, dstate)
        chunk_states = torch.matmul(Xd.transpose(-1, -2), Bw).to(f32)  # (b, c, h, p, n)

        chunk_decay = torch.exp(cs[..., -1])  # (b, c, h)
        if carry is not None:
            chunk_decay = chunk_decay * carry.unsqueeze(-1)
        if h0 is None:
            h0_ = chunk_states.new_zeros(batch, nheads, headdim, dstate)
        else:
            h0_ = h0.to(f32)
        S_prev, final = _pass_states(chunk_states, chunk_decay, h0_)
        rhs[..., Q:, :].copy_(S_prev.transpose(-1, -2))

        E = torch.exp(cs)  # decay from the chunk start
        if from_start is not None:
            E = E * from_start.unsqueeze(2)
        torch.mul(Cg.unsqueeze(3), E.view(*by_group, Q, 1), out=lhs[..., Q:])
        lhs = lhs.view(batch, nchunks, nheads, Q, Q + dstate)

        y = torch.matmul(lhs, rhs).transpose(2, 3)  # (b, c, Q, h, p)
        out = torch.empty(xc.shape, dtype=x.dtype, device=dev)
        if D is None:
            out.copy_(y)
        else:
            torch.addcmul(y, xc, _D_heads(D), out=out)

        ctx.save_for_backward(x, dt, A, D, Bg, Cg, decay, lhs, rhs, w_end, Bw, chunk_decay,
                              S_prev, E)
        ctx.config = (Q, mm_dtype, h0 is not None, B.dtype, C.dtype)
        return out.view(x.shape), final

    @staticmethod
    def backward(ctx, grad_out, grad_final):
        device_type = grad_out.device.type
        with torch.autocast(device_type, enabled=False):
            return _ChunkScan._backward(ctx, grad_out, grad_final)

    @staticmethod
    def _backward(ctx, grad_out, grad_final):
        (x, dt, A, D, Bg, Cg, decay, lhs, rhs, w_end, Bw, chunk_decay, S_prev,
         E) = ctx.saved_tensors
        Q, mm_dtype, has_h0, B_dtype, C_dtype = ctx.config
        batch, seqlen, nheads, headdim = x.shape
        ngroups, dstate = Bg.shape[2], Bg.shape[-1]
        nchunks, rep = seqlen // Q, nheads // ngroups
        by_group = (batch, nchunks, ngroups, rep)
        flat = batch * nchunks * nheads
        f32 = dt.dtype
        Xd, M = rhs[..., :Q, :], lhs[..., :Q]

        dYc = grad_out.reshape(batch, nchunks, Q, nheads, headdim)
        dY = dYc.transpose(2, 3).to(mm_dtype).contiguous()  # (b, c, h, Q, p)

        # y = lhs @ rhs: d rhs = [dXd ; dS_prev^T], d lhs = [dM | dCe], one matmul each.
        drhs = torch.matmul(lhs.transpose(-1, -2), dY)  # (b, c, h, Q + n, p)
        dlhs = torch.matmul(dY, rhs.transpose(-1, -2))  # (b, c, h, Q, Q + n)
        dXd, dS_prev = drhs[..., :Q, :], drhs[..., Q:, :].transpose(-1, -2).to(f32)
        dM, dCe = dlhs[..., :Q], dlhs[..., Q:]

        # M = G o decay, decay = exp(segsum): d segsum = dM o M (zero where masked).
        # segsum[t, s] = sum of dA over (s, t], so d dA_k = sum_{t >= k > s} dsegsum[t, s]:
        # summed over that rectangle directly (row cumsum, then strictly-lower column sums)
        # rather than as row sums minus column sums, which cancel badly for long chunks.
        dseg = torch.empty(M.shape, dtype=f32, device=M.device)
        torch.mul(dM, M, out=dseg)
        dseg.cumsum_(-1).masked_fill_(_upper_incl(Q, dseg.device), 0.0)
        ddA = F.pad(dseg.sum(-2)[..., :-1], (1, 0))  # (b, c, h, Q)
        del dseg
        dG = dM.mul_(decay.to(mm_dtype)).reshape(*by_group, Q, Q).sum(3)  # (b, c, g, Q, Q)
        dCg = torch.matmul(dG, Bg)
        dBg = torch.matmul(dG.transpose(-1, -2), Cg)

        # Ce = E o C (C shared by the heads of a group).
        dCe = dCe.reshape(*by_group, Q, dstate)
        dcs = (dCe * Cg.unsqueeze(3)).sum(-1).to(f32).view(batch, nchunks, nheads, Q) * E
        dCg += (dCe * E.view(*by_group, Q, 1).to(dCe.dtype)).sum(3)

        # State passing.
        if grad_final is None:
            grad_final = S_prev.new_zeros(S_prev[:, 0].shape)
        dS, dchunk_decay, dh0 = _pass_states_backward(chunk_decay, S_prev, dS_prev,
                                                      grad_final.to(f32))
        ddA += (dchunk_decay * chunk_decay).unsqueeze(-1)  # exp(cs_end) depends on every dA_k

        # chunk_states = Xd^T Bw, Bw = w_end o B.
        dS_mm = dS.to(mm_dtype)
        # Out of place: dXd is a strided slice of drhs, and an in-place baddbmm_ on it would
        # fall back to one small matmul per chunk.
        dXd = torch.baddbmm(dXd.reshape(flat, Q, headdim), Bw.view(flat, Q, dstate),
                            dS_mm.view(flat, headdim, dstate).transpose(1, 2))
        dXd = dXd.view(batch, nchunks, nheads, Q, headdim)
        dBw = torch.matmul(Xd, dS_mm).view(*by_group, Q, dstate)
        # w_end[s] = exp(cs_end - cs_s) depends on dA_k for s < k: an exclusive cumsum.
        dw = (dBw * Bg.unsqueeze(3)).sum(-1).to(f32).view(batch, nchunks, nheads, Q) * w_end
        ddA += F.pad(dw.cumsum(-1)[..., :-1], (1, 0))
        dBg += (dBw * w_end.view(*by_group, Q, 1).to(dBw.dtype)).sum(3)

        # B and C gradients back to (b, L, g, n).
        dB = dBg.transpose(2, 3).reshape(batch, seqlen, ngroups, dstate).to(B_dtype)
        dC = dCg.transpose(2, 3).reshape(batch, seqlen, ngroups, dstate).to(C_dtype)

        # Xd = dt o x, and the D skip.
        xc = x.reshape(batch, nchunks, Q, nheads, headdim)
        dtc = dt.view(batch, nchunks, Q, nheads)
        dXd_t = dXd.transpose(2, 3)  # (b, c, Q, h, p) view
        dx = torch.empty(xc.shape, dtype=x.dtype, device=x.device)
        ddt = torch.empty(xc.shape[:-1], dtype=f32, device=x.device)  # (b, c, Q, h)
        xdY = None if D is None else torch.zeros(nheads, headdim, dtype=f32, device=x.device)
        # Five passes over (L, h, p) tensors, done a tile of chunks at a time so they share
        # the cache (as the conv's taps do); per tile: dx, ddt and, with D, the D gradient.
        for c in _t.chunk_tiles(nchunks, Q):
            x_t, dXd_c, dY_c = xc[:, c], dXd_t[:, c], dYc[:, c]
            torch.mul(dXd_c, dtc[:, c].unsqueeze(-1), out=dx[:, c])
            prod = x_t * dXd_c
            ddt[:, c] = prod.sum(-1)
            if D is not None:
                dx[:, c].addcmul_(dY_c, _D_heads(D))
                xdY += torch.mul(x_t, dY_c, out=prod).sum(dim=(0, 1, 2))
        dD = None if D is None else (xdY if D.dim() == 2 else xdY.sum(-1)).to(D.dtype)

        # cs = cumsum(dt * A) inside each chunk.
        ddA = (ddA + dcs.flip(-1).cumsum(-1).flip(-1)).transpose(2, 3)  # (b, c, Q, h)
        ddt = ddt + ddA * A
        dA = (ddA * dtc).sum(dim=(0, 1, 2)).to(A.dtype)
        return (dx.view(x.shape), ddt.reshape(dt.shape).to(dt.dtype), dA, dB, dC, dD,
                dh0 if has_h0 else None, None, None)


def _upper_incl(Q: int, device) -> torch.Tensor:
    """(Q, Q) bool, True where row <= column."""
    return torch.ones(Q, Q, dtype=torch.bool, device=device).triu()


def _D_heads(D: torch.Tensor) -> torch.Tensor:
    """D (h,) or (h, p) broadcastable against (..., h, p)."""
    return D.unsqueeze(-1) if D.dim() == 1 else D


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
        out (batch, seqlen, nheads, headdim) in x's dtype, and, with return_final_states, the
        final states (batch, nheads, headdim, d_state) in fp32 (fp64 for fp64 inputs).
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
    if D is not None and D.shape not in ((nheads,), (nheads, headdim)):
        raise ValueError(f"D must be ({nheads},) or ({nheads}, {headdim}), got {tuple(D.shape)}")
    if seq_idx is not None and seq_idx.shape != (batch, seqlen):
        raise ValueError(f"seq_idx must be (batch, seqlen) = {(batch, seqlen)}, "
                         f"got {tuple(seq_idx.shape)}")
    if initial_states is not None and initial_states.shape != (batch, nheads, headdim, dstate):
        raise ValueError(f"initial_states must be {(batch, nheads, headdim, dstate)}, "
                         f"got {tuple(initial_states.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    dt = process_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b, l, h), fp32 or fp64
    # Padding with dt = 0 makes the extra tokens decay-free and input-free: results unchanged.
    pad = (-seqlen) % chunk_size
    x_p, dt, B, C = (_pad_to_chunks(t, pad) for t in (x, dt, B, C))
    if seq_idx is not None and pad:
        seq_idx = torch.cat([seq_idx, seq_idx[:, -1:].expand(batch, pad)], dim=1)
    out, final_state = _ChunkScan.apply(x_p, dt, A.to(dt.dtype), B, C,
                                        None if D is None else D.to(dt.dtype),
                                        initial_states, seq_idx, chunk_size)
    if pad:
        out = out[:, :seqlen]
    if z is not None:
        out = out * F.silu(z)
    return (out, final_state) if return_final_states else out
