"""mamba_ssm's gated RMSNorm, fast on CPU: tiles of rows written straight into the outputs,
with a hand-written backward. Reference: ``ssd_minimal.gated_rms_norm_minimal``."""
import torch
import torch.nn.functional as F

import neuromamba.models.ops.tiles as _t


# Rows (tokens) per tile of the gated RMSNorm: its ~8 elementwise passes then run on a tile that
# stays in the cache instead of streaming the whole (L, d_ssm) tensor through memory each time.
NORM_TILE_ROWS = 1024


def _row_tiles(rows: int):
    return (slice(start, min(rows, start + NORM_TILE_ROWS)) for start in range(0, rows, NORM_TILE_ROWS))


class _GatedRMSNorm(torch.autograd.Function):
    """Gated RMSNorm with a hand-written backward (fp32 inside, output in x's dtype).

    Autograd would save and revisit ~6 full-size fp32 intermediates; this saves only the
    inputs and the per-group inverse RMS and recomputes the cheap products, tile by tile of
    rows (every row is normalised on its own, so tiling changes no value).
    """

    @staticmethod
    def forward(ctx, x, z, weight, eps, group, norm_before_gate):
        width = x.shape[-1]
        rows = x.reshape(-1, width)
        zs = None if z is None else z.reshape(-1, width)
        out = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
        rstd = torch.empty(rows.shape[0], width // group, 1, dtype=_t.at_least_fp32_of(x), device=x.device)
        with torch.autocast(x.device.type, enabled=False):
            for tile in _row_tiles(rows.shape[0]):
                rstd[tile] = _norm_rows(rows[tile], None if zs is None else zs[tile], weight, eps,
                                        group, norm_before_gate, out[tile])
        ctx.save_for_backward(x, z, weight, rstd)
        ctx.config = (group, norm_before_gate)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        x, z, weight, rstd = ctx.saved_tensors
        group, norm_before_gate = ctx.config
        width = x.shape[-1]
        rows, dout = x.reshape(-1, width), grad_out.reshape(-1, width)
        zs = None if z is None else z.reshape(-1, width)
        grad_x = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
        grad_z = None if z is None else torch.empty(zs.shape, dtype=z.dtype, device=z.device)
        grad_w = torch.zeros(width, dtype=_t.at_least_fp32_of(x), device=x.device)
        with torch.autocast(x.device.type, enabled=False):
            for tile in _row_tiles(rows.shape[0]):
                grad_w += _norm_rows_backward(dout[tile], rows[tile], None if zs is None else zs[tile],
                                              weight, rstd[tile], group, norm_before_gate, grad_x[tile],
                                              None if grad_z is None else grad_z[tile])
        return (grad_x.view(x.shape), None if z is None else grad_z.view(z.shape),
                grad_w.to(weight.dtype), None, None, None)


def _mul_into(out, a, b):
    """out = a * b, written in place when the dtypes allow (saves a copy per tile)."""
    if out.dtype == torch.promote_types(a.dtype, b.dtype):
        torch.mul(a, b, out=out)
    else:
        out.copy_(a * b)


def _silu_backward_into(out, grad, z):
    """out = d silu(z) / dz * grad, written in place when the dtypes allow."""
    if out.dtype == grad.dtype == z.dtype:
        torch.ops.aten.silu_backward.grad_input(grad, z, grad_input=out)
    else:
        out.copy_(torch.ops.aten.silu_backward(grad, z))


def _norm_rows(x, z, weight, eps, group, norm_before_gate, out):
    """Forward on (rows, width), written into ``out``; returns rstd (rows, groups, 1)."""
    cdt = _t.at_least_fp32_of(x)
    silu_z = None if z is None else F.silu(z.to(cdt))
    g = _gate_input(x, silu_z, norm_before_gate, group)  # (rows, groups, group)
    # vector_norm is one fused pass; square().mean() would be two.
    rms = torch.linalg.vector_norm(g, dim=-1, keepdim=True) * group ** -0.5
    rstd = torch.rsqrt(rms.square() + eps)
    normed = (g * rstd).flatten(-2)
    if silu_z is not None and norm_before_gate:
        _mul_into(out, normed.mul_(weight.to(cdt)), silu_z)
    else:
        _mul_into(out, normed, weight.to(cdt))
    return rstd


def _norm_rows_backward(grad_out, x, z, weight, rstd, group, norm_before_gate, grad_x, grad_z):
    """Backward on (rows, width): writes ``grad_x`` and ``grad_z`` (None without a gate);
    returns this tile's grad_w (fp32)."""
    cdt = _t.at_least_fp32_of(x)
    z32 = None if z is None else z.to(cdt)
    silu_z = None if z is None else F.silu(z32)
    w = weight.to(cdt)
    g = _gate_input(x, silu_z, norm_before_gate, group)  # (rows, groups, group)
    normed = g.mul_(rstd) if g.data_ptr() != x.data_ptr() else g * rstd
    normed = normed.flatten(-2)
    dout = grad_out.to(cdt)
    if z is not None and norm_before_gate:
        _silu_backward_into(grad_z, dout * normed * w, z32)
        dout = dout * silu_z
    # t = dout o normed serves both grad_w (its column sums) and, weighted by w, the
    # per-group mean <dn, normed> / group that the RMS backward subtracts.
    t = dout * normed
    grad_w = t.sum(0)
    groups = g.shape[-2]
    if groups == 1:
        mean_dn_n = (t @ w)[..., None, None] / group
    else:
        mean_dn_n = (t * w).unflatten(-1, g.shape[-2:]).sum(-1, keepdim=True) / group
    grad_g = torch.mul(dout, w).unflatten(-1, g.shape[-2:])
    grad_g.addcmul_(normed.unflatten(-1, g.shape[-2:]), mean_dn_n, value=-1)
    if z is not None and not norm_before_gate:
        grad_g = grad_g.mul_(rstd).flatten(-2)
        _silu_backward_into(grad_z, grad_g * x.to(cdt), z32)
        _mul_into(grad_x, grad_g, silu_z)
    else:
        _mul_into(grad_x.unflatten(-1, g.shape[-2:]), grad_g, rstd)
    return grad_w


def _gate_input(x, silu_z, norm_before_gate, group):
    """The tensor whose RMS is taken, fp32, split into (..., groups, group)."""
    g = x.to(_t.at_least_fp32_of(x))
    if silu_z is not None and not norm_before_gate:
        g = g * silu_z
    return g.unflatten(-1, (g.shape[-1] // group, group))


def gated_rms_norm(x, z, weight, eps: float, group: int, norm_before_gate: bool):
    return _GatedRMSNorm.apply(x, z, weight, eps, group, norm_before_gate)
