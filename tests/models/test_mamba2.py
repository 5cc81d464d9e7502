"""The Mamba2 layer and its fast ops (neuromamba.models.ops) against the plain references of
neuromamba.models.ssd_minimal (the token-by-token recurrence, the paper's chunked SSD, conv1d,
the gated norm), run in float64, and against the whole layer re-derived here from SPEC §6.
"""
import math
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from neuromamba.models import mamba2 as mamba2_module
from neuromamba.models import ops
from neuromamba.models.ops import gated_norm, tiles
from neuromamba.models.ssd_minimal import (causal_conv1d_minimal, gated_rms_norm_minimal,
                                          sequential_scan, ssd_minimal)
from neuromamba.models.mamba2 import BACKEND_ENV_VAR, Mamba2, RMSNorm, RMSNormGated


# --------------------------------------------------------------------------- references
# The plain references live in neuromamba.models.ssd_minimal (the paper's listings, autograd
# only); sequential_mamba2 below re-derives the whole layer from its parameters.


def sequential_mamba2(m: Mamba2, u, seq_idx=None):
    """Mamba2.forward re-written naively from the parameters (conv by loop, scan by loop)."""
    batch, seqlen, _ = u.shape
    zxbcdt = F.linear(u, m.in_proj.weight, m.in_proj.bias)
    d_mlp = (zxbcdt.shape[-1] - 2 * m.d_ssm - 2 * m.ngroups * m.d_state - m.nheads) // 2
    z0, x0, z, xBC, dt = torch.split(
        zxbcdt, [d_mlp, d_mlp, m.d_ssm, m.d_ssm + 2 * m.ngroups * m.d_state, m.nheads], dim=-1)
    w = m.conv1d.weight[:, 0]  # (dim, width)
    width = w.shape[1]
    conv = []
    for t in range(seqlen):
        acc = m.conv1d.bias.clone() if m.conv1d.bias is not None else xBC.new_zeros(w.shape[0])
        acc = acc.expand(batch, -1)
        for k in range(width):  # tap k looks back width-1-k tokens
            src = t - (width - 1 - k)
            if src < 0:
                continue
            keep = torch.ones(batch, dtype=u.dtype) if seq_idx is None else \
                (seq_idx[:, src] == seq_idx[:, t]).to(u.dtype)
            acc = acc + keep[:, None] * xBC[:, src] * w[:, k]
        conv.append(acc)
    xBC = F.silu(torch.stack(conv, dim=1))
    x, B, C = torch.split(xBC, [m.d_ssm, m.ngroups * m.d_state, m.ngroups * m.d_state], dim=-1)
    dt = F.softplus(dt + m.dt_bias)
    if m.dt_limit != (0.0, math.inf):
        dt = dt.clamp(*m.dt_limit)
    A = -torch.exp(m.A_log)
    D = m.D.view(m.nheads, m.headdim) if m.D_has_hdim else m.D
    heads = (batch, seqlen, m.nheads, m.headdim)
    groups = (batch, seqlen, m.ngroups, m.d_state)
    y, _ = sequential_scan(x.reshape(heads), dt, A, B.reshape(groups), C.reshape(groups), D=D,
                           z=None if m.rmsnorm else z.reshape(heads), seq_idx=seq_idx)
    y = y.reshape(batch, seqlen, m.d_ssm)
    if m.rmsnorm:
        if not m.norm_before_gate:
            y = y * F.silu(z)
        g = y.unflatten(-1, (m.ngroups, m.d_ssm // m.ngroups))
        y = (g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2) * m.norm.weight
        if m.norm_before_gate:
            y = y * F.silu(z)
    if d_mlp > 0:
        y = torch.cat([F.silu(z0) * x0, y], dim=-1)
    return F.linear(y, m.out_proj.weight, m.out_proj.bias)


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def randomize_(m: Mamba2, seed=0):
    """Non-trivial values everywhere (norm weight, D, conv bias) so every path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("norm.weight", "D"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name == "conv1d.bias" or name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return m


@pytest.fixture(autouse=True)
def _auto_backend_configured_chunks(monkeypatch):
    """Default backend choice; the pure CPU path honours chunk_size exactly (no 64 cap), so
    the chunk sizes named in these tests are the ones exercised."""
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(mamba2_module, "PURE_CPU_MAX_CHUNK", 10**9)


# --------------------------------------------------------------------------- the scan op
@pytest.mark.parametrize("ngroups,nheads,seqlen,chunk", [(1, 2, 37, 16), (2, 4, 100, 64),
                                                          (1, 3, 5, 256), (2, 2, 64, 16)])
def test_chunk_scan_matches_sequential_fp64(ngroups, nheads, seqlen, chunk):
    gen = torch.Generator().manual_seed(1)
    b, p, n = 2, 3, 5
    kw = dict(dtype=torch.float64, generator=gen)
    x = torch.randn(b, seqlen, nheads, p, **kw)
    dt = torch.randn(b, seqlen, nheads, **kw)
    A = -torch.rand(nheads, **kw) * 4
    B, C = torch.randn(b, seqlen, ngroups, n, **kw), torch.randn(b, seqlen, ngroups, n, **kw)
    D, z = torch.randn(nheads, **kw), torch.randn(b, seqlen, nheads, p, **kw)
    h0 = torch.randn(b, nheads, p, n, **kw)
    out, final = ops.mamba_chunk_scan_combined(x, dt, A, B, C, chunk, D=D, z=z,
                                               initial_states=h0, dt_softplus=True,
                                               return_final_states=True)
    ref, ref_final = sequential_scan(x, F.softplus(dt), A, B, C, D=D, z=z, initial_states=h0)
    assert rel_err(out, ref) < 1e-12
    assert rel_err(final, ref_final) < 1e-12


def test_chunk_scan_seq_idx_and_dt_limit_fp64():
    gen = torch.Generator().manual_seed(2)
    b, l, h, p, g, n = 2, 45, 2, 4, 1, 3
    kw = dict(dtype=torch.float64, generator=gen)
    x, dt = torch.randn(b, l, h, p, **kw), torch.randn(b, l, h, **kw)
    A, dt_bias = -torch.rand(h, **kw) * 2, torch.randn(h, **kw)
    B, C = torch.randn(b, l, g, n, **kw), torch.randn(b, l, g, n, **kw)
    D = torch.randn(h, p, **kw)
    seq_idx = torch.tensor([[0] * 7 + [1] * 16 + [2] * 22, [0] * 30 + [3] * 15], dtype=torch.int32)
    h0 = torch.randn(b, h, p, n, **kw)
    out, final = ops.mamba_chunk_scan_combined(
        x, dt, A, B, C, 8, D=D, dt_bias=dt_bias, dt_softplus=True, dt_limit=(0.05, 0.5),
        seq_idx=seq_idx, initial_states=h0, return_final_states=True)
    dt_ref = F.softplus(dt + dt_bias).clamp(0.05, 0.5)
    ref, ref_final = sequential_scan(x, dt_ref, A, B, C, D=D, seq_idx=seq_idx, initial_states=h0)
    assert rel_err(out, ref) < 1e-12
    assert rel_err(final, ref_final) < 1e-12
    # The boundary really resets: without seq_idx the second sequence differs.
    plain = ops.mamba_chunk_scan_combined(x, dt, A, B, C, 8, D=D, dt_bias=dt_bias,
                                          dt_softplus=True, dt_limit=(0.05, 0.5))
    assert rel_err(plain[0, 7:], ref[0, 7:]) > 1e-3


@pytest.mark.parametrize("tile", [2, 3, 5, 512])  # tiles shorter than the kernel, and one tile
def test_causal_conv_matches_nn_conv1d_and_grads(monkeypatch, tile):
    monkeypatch.setattr(tiles, "CONV_TILE_TOKENS", tile)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    ref = F.conv1d(x.transpose(1, 2), w[:, None], bias, padding=3, groups=6)[..., :11]
    out = ops.causal_conv1d(x, w, bias)
    assert rel_err(out, ref.transpose(1, 2)) < 1e-14
    seq_idx = torch.tensor([[0] * 5 + [1] * 6, [0] * 2 + [1] * 2 + [2] * 7])
    assert torch.autograd.gradcheck(
        lambda a, b, c: ops.causal_conv1d(a, b, c, seq_idx=seq_idx, activation="silu"),
        (x, w, bias))
    # Short sequences (shorter than the kernel) work too.
    assert torch.autograd.gradcheck(lambda a, b: ops.causal_conv1d(a[:, :2], b), (x, w))
    # With SiLU, equal to F.silu of the reference conv, values and gradients.
    grad = torch.randn(2, 11, 6, dtype=torch.float64, generator=gen)
    fused = ops.causal_conv1d(x, w, bias, activation="silu")
    expected = F.silu(F.conv1d(x.transpose(1, 2), w[:, None], bias, padding=3, groups=6)[..., :11].transpose(1, 2))
    assert rel_err(fused, expected) < 1e-14
    for got, want in zip(torch.autograd.grad(fused, (x, w, bias), grad),
                         torch.autograd.grad(expected, (x, w, bias), grad)):
        assert rel_err(got, want) < 1e-12


def test_causal_conv_on_a_column_slice_equals_contiguous_input():
    # The layer's pure path on CUDA passes a column slice of in_proj's output.
    gen = torch.Generator().manual_seed(4)
    wide = torch.randn(2, 13, 10, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, generator=gen)
    bias = torch.randn(6, generator=gen)
    grad_out = torch.randn(2, 13, 6, generator=gen)
    dense = wide.detach()[..., 3:9].clone().requires_grad_()
    out_slice = ops.causal_conv1d(wide[..., 3:9], w, bias, activation="silu")
    out_dense = ops.causal_conv1d(dense, w, bias, activation="silu")
    (g_slice,) = torch.autograd.grad(out_slice, wide, grad_out)
    (g_dense,) = torch.autograd.grad(out_dense, dense, grad_out)
    assert torch.equal(out_slice, out_dense)
    assert torch.equal(g_slice[..., 3:9], g_dense)
    assert not g_slice[..., :3].any() and not g_slice[..., 9:].any()


# Tokens per tile of the scan backward's elementwise passes: 1 chunk, 2 chunks (last tile short)
# and everything in one tile.
SCAN_TILES = [4, 8, 1024]


@pytest.mark.parametrize("tile", SCAN_TILES)
def test_chunk_scan_gradcheck_fp64(monkeypatch, tile):
    monkeypatch.setattr(tiles, "CONV_TILE_TOKENS", tile)
    gen = torch.Generator().manual_seed(4)
    b, l, h, p, g, n = 1, 13, 2, 2, 1, 3
    kw = dict(dtype=torch.float64, generator=gen, requires_grad=True)
    x, dt = torch.randn(b, l, h, p, **kw), torch.randn(b, l, h, **kw)
    A = (-torch.rand(h, dtype=torch.float64, generator=gen) * 2).requires_grad_()
    B, C = torch.randn(b, l, g, n, **kw), torch.randn(b, l, g, n, **kw)
    h0 = torch.randn(b, h, p, n, **kw)
    seq_idx = torch.tensor([[0] * 6 + [1] * 7])

    def scan(*args):
        out, final = ops.mamba_chunk_scan_combined(*args[:5], 4, initial_states=args[5],
                                                   dt_softplus=True, seq_idx=seq_idx,
                                                   return_final_states=True)
        return out, final
    assert torch.autograd.gradcheck(scan, (x, dt, A, B, C, h0))


@pytest.mark.parametrize("tile", SCAN_TILES)
def test_chunk_scan_gradcheck_groups_and_D_fp64(monkeypatch, tile):
    """Hand-written backward with 2 heads per group, D per channel, padding and dt_limit."""
    monkeypatch.setattr(tiles, "CONV_TILE_TOKENS", tile)
    gen = torch.Generator().manual_seed(5)
    b, l, h, p, g, n = 2, 11, 4, 2, 2, 3
    kw = dict(dtype=torch.float64, generator=gen, requires_grad=True)
    x, dt = torch.randn(b, l, h, p, **kw), torch.randn(b, l, h, **kw)
    A = (-torch.rand(h, dtype=torch.float64, generator=gen) * 2).requires_grad_()
    B, C = torch.randn(b, l, g, n, **kw), torch.randn(b, l, g, n, **kw)
    D, dt_bias = torch.randn(h, p, **kw), torch.randn(h, **kw)

    def scan(x, dt, A, B, C, D, dt_bias):
        return ops.mamba_chunk_scan_combined(x, dt, A, B, C, 4, D=D, dt_bias=dt_bias,
                                             dt_softplus=True, dt_limit=(0.0, 5.0))
    assert torch.autograd.gradcheck(scan, (x, dt, A, B, C, D, dt_bias))


# --------------------------------------------------------------------------- the layer
CONFIGS = {
    "base_like": dict(d_model=16, d_state=8, headdim=16, chunk_size=16),
    "ngroups2": dict(d_model=16, d_state=4, headdim=8, ngroups=2, chunk_size=16),
    "headdim_ne_dmodel": dict(d_model=12, d_state=6, headdim=6, chunk_size=64),
    "chunk256_dt_limit": dict(d_model=8, d_state=4, headdim=4, chunk_size=256,
                              dt_limit=(0.01, 0.05)),
    "D_has_hdim_norm_before_gate": dict(d_model=8, d_state=4, headdim=8, D_has_hdim=True,
                                        norm_before_gate=True, ngroups=2, chunk_size=16),
    "no_rmsnorm_bias": dict(d_model=8, d_state=4, headdim=4, rmsnorm=False, bias=True,
                            conv_init=0.5, chunk_size=16),
    "d_ssm_lt_d_inner": dict(d_model=8, d_state=4, headdim=4, d_ssm=8, chunk_size=16),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_layer_matches_sequential_outputs_and_grads(name):
    torch.manual_seed(0)
    m = randomize_(Mamba2(**CONFIGS[name]))
    seqlen = 53  # odd, not a multiple of any chunk size
    u = torch.randn(2, seqlen, m.d_model, requires_grad=True)
    grad_out = torch.randn(2, seqlen, m.d_model)

    out = m(u)
    grads = torch.autograd.grad(out, [u] + list(m.parameters()), grad_out)

    m64 = _double_copy(m)
    u64 = u.detach().double().requires_grad_()
    ref = sequential_mamba2(m64, u64)
    ref_grads = torch.autograd.grad(ref, [u64] + list(m64.parameters()), grad_out.double())

    assert out.dtype == torch.float32 and out.shape == u.shape
    assert rel_err(out, ref) <= 1e-5
    names = ["input"] + [n for n, _ in m.named_parameters()]
    for pname, g, rg in zip(names, grads, ref_grads):
        assert rel_err(g, rg) <= 1e-5, pname


def _double_copy(m: Mamba2) -> Mamba2:
    m64 = Mamba2(**_ctor_kwargs(m)).double()
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    return m64


def _ctor_kwargs(m: Mamba2) -> dict:
    return dict(d_model=m.d_model, d_state=m.d_state, d_conv=m.d_conv, expand=m.expand,
                headdim=m.headdim, d_ssm=m.d_ssm, ngroups=m.ngroups, D_has_hdim=m.D_has_hdim,
                rmsnorm=m.rmsnorm, norm_before_gate=m.norm_before_gate, dt_limit=m.dt_limit,
                bias=m.in_proj.bias is not None, conv_bias=m.conv1d.bias is not None,
                chunk_size=m.chunk_size)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunk_size_does_not_change_results(dtype):
    torch.manual_seed(0)
    m = randomize_(Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=16)).to(dtype)
    u = torch.randn(2, 300, 16, dtype=dtype, requires_grad=True)
    results = []
    for chunk in (16, 64, 256, 7):
        m.chunk_size = chunk
        out = m(u)
        results.append((out, torch.autograd.grad(out.square().sum(), [u] + list(m.parameters()))))
    out0, grads0 = results[0]
    # Exact math: float64 agrees to rounding. In fp32 the parameter gradients (sums over all
    # 600 tokens with cancellation, decays from fp32 cumsums over up to 256 tokens) move by
    # ~1e-5 between chunkings, as in mamba_ssm's kernels; outputs and input grads do not.
    tol_out, tol_param = (1e-10, 1e-10) if dtype == torch.float64 else (1e-5, 1e-4)
    for out, grads in results[1:]:
        assert rel_err(out, out0) <= tol_out
        assert rel_err(grads[0], grads0[0]) <= tol_out
        for g, g0 in zip(grads[1:], grads0[1:]):
            assert rel_err(g, g0) <= tol_param


def test_cpu_chunk_cap_gives_the_same_results(monkeypatch):
    torch.manual_seed(0)
    m = randomize_(Mamba2(d_model=16, d_state=8, headdim=8, chunk_size=256))
    u = torch.randn(1, 700, 16, requires_grad=True)
    results = []
    for cap in (10**9, 64):
        monkeypatch.setattr(mamba2_module, "PURE_CPU_MAX_CHUNK", cap)
        out = m(u)
        results.append((out, torch.autograd.grad(out.square().sum(), [u] + list(m.parameters()))))
    (out_256, grads_256), (out_64, grads_64) = results
    assert rel_err(out_64, out_256) <= 1e-5
    assert rel_err(grads_64[0], grads_256[0]) <= 1e-5
    for g, g_ref in zip(grads_64[1:], grads_256[1:]):
        assert rel_err(g, g_ref) <= 1e-4  # parameter sums over 700 tokens, fp32


def test_packed_seq_idx_equals_separate_sequences():
    torch.manual_seed(0)
    m = randomize_(Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=16))
    lengths = [21, 3, 40]  # boundaries inside chunks, a sequence shorter than the conv width
    seqs = [torch.randn(1, n, 16) for n in lengths]
    grad_outs = [torch.randn(1, n, 16) for n in lengths]

    packed = torch.cat(seqs, dim=1).requires_grad_()
    seq_idx = torch.cat([torch.full((1, n), i, dtype=torch.int32) for i, n in enumerate(lengths)],
                        dim=1)
    out = m(packed, seq_idx=seq_idx)
    params = list(m.parameters())
    grads = torch.autograd.grad(out, [packed] + params, torch.cat(grad_outs, dim=1))

    sep_outs, sep_in_grads = [], []
    sep_param_grads = [torch.zeros_like(p) for p in params]
    for s, go in zip(seqs, grad_outs):
        s = s.clone().requires_grad_()
        o = m(s)
        g = torch.autograd.grad(o, [s] + params, go)
        sep_outs.append(o)
        sep_in_grads.append(g[0])
        sep_param_grads = [a + b for a, b in zip(sep_param_grads, g[1:])]

    assert rel_err(out, torch.cat(sep_outs, dim=1)) <= 1e-5
    assert rel_err(grads[0], torch.cat(sep_in_grads, dim=1)) <= 1e-5
    for p_name, g, sg in zip([n for n, _ in m.named_parameters()], grads[1:], sep_param_grads):
        assert rel_err(g, sg) <= 1e-5, p_name


def test_base_config_parameter_names_and_shapes():
    m = Mamba2(d_model=192, d_state=48, headdim=192, expand=2)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        "dt_bias": (2,), "A_log": (2,), "D": (2,),
        "in_proj.weight": (866, 192),
        "conv1d.weight": (480, 1, 4), "conv1d.bias": (480,),
        "norm.weight": (384,),
        "out_proj.weight": (192, 384),
    }
    assert list(m.buffers()) == []
    assert all(getattr(getattr(m, n), "_no_weight_decay", False) for n in ("A_log", "D", "dt_bias"))
    assert sum(p.numel() for p in m.parameters()) == 866 * 192 + 480 * 5 + 384 + 192 * 384 + 6


def test_init_statistics():
    torch.manual_seed(0)
    m = Mamba2(d_model=256, d_state=16, headdim=4, expand=2, dt_min=0.002, dt_max=0.05,
               A_init_range=(2, 8))  # 128 heads: enough samples for range checks
    dt = F.softplus(m.dt_bias.detach())
    assert dt.min() >= 0.002 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    # log-uniform: log dt roughly uniform on [log 0.002, log 0.05]
    log_dt = dt.log()
    mid = (math.log(0.002) + math.log(0.05)) / 2
    assert abs(log_dt.mean().item() - mid) < 0.3
    A = m.A_log.detach().exp()
    assert A.min() >= 2 and A.max() <= 8 and abs(A.mean().item() - 5) < 0.6
    assert torch.equal(m.D.detach(), torch.ones(128))
    assert torch.equal(m.norm.weight.detach(), torch.ones(512))
    floor = Mamba2(d_model=8, headdim=4, dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-4)
    assert torch.allclose(F.softplus(floor.dt_bias.detach()), torch.full((4,), 1e-4), rtol=1e-4)
    conv = Mamba2(d_model=8, headdim=4, conv_init=0.01)
    assert conv.conv1d.weight.abs().max() <= 0.01


def test_bf16_autocast_close_to_fp32_with_finite_grads():
    torch.manual_seed(0)
    m = randomize_(Mamba2(d_model=32, d_state=16, headdim=16, chunk_size=16))
    u = torch.randn(2, 70, 32, requires_grad=True)
    ref = m(u)
    ref_grads = torch.autograd.grad(ref.sum(), [u, m.in_proj.weight])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(u)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    grads = torch.autograd.grad(out.float().sum(), [u, m.in_proj.weight] + list(m.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert rel_err(out.float(), ref) < 5e-2
    for g, rg in zip(grads[:2], ref_grads):
        assert rel_err(g, rg) < 5e-2


def test_rmsnorm():
    norm = RMSNorm(6)
    assert [n for n, _ in norm.named_parameters()] == ["weight"] and norm.eps == 1e-5
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 6)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * torch.arange(1.0, 7.0)
    assert torch.allclose(norm(x), expected, rtol=1e-6, atol=1e-6)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_rmsnorm_gated_group_size():
    norm = RMSNormGated(8, group_size=4, norm_before_gate=False)
    x, z = torch.randn(2, 8), torch.randn(2, 8)
    g = (x * F.silu(z)).view(2, 2, 4)
    expected = (g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 8)
    assert torch.allclose(norm(x, z), expected, atol=1e-6)


def test_env_var_forces_pure_path_and_rejects_bad_values(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "pure")
    assert mamba2_module.select_backend(torch.device("cuda")) is None  # no import attempted
    monkeypatch.setenv(BACKEND_ENV_VAR, "fused")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CPU fused needs the interpreter
    with pytest.raises(RuntimeError, match="fused needs a CUDA input.*TRITON_INTERPRET=1"):
        mamba2_module.select_backend(torch.device("cpu"))
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")
    with pytest.raises(ValueError, match=BACKEND_ENV_VAR):
        Mamba2(d_model=8, headdim=4)(torch.randn(1, 3, 8))
    monkeypatch.setenv(BACKEND_ENV_VAR, "pure")
    m = Mamba2(d_model=8, headdim=4)
    assert m(torch.randn(1, 3, 8)).shape == (1, 3, 8)


def test_runs_without_mamba_ssm(monkeypatch):
    import sys
    # Pretend the packages are absent, then ask the loader afresh.
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)
    mamba2_module.load_fused_ops.cache_clear()
    try:
        reason = mamba2_module.load_fused_ops()
        assert isinstance(reason, str) and "not importable" in reason
        out = Mamba2(d_model=8, headdim=4)(torch.randn(1, 5, 8))
        assert torch.isfinite(out).all()
    finally:
        mamba2_module.load_fused_ops.cache_clear()


def test_bad_inputs_raise_readable_errors():
    m = Mamba2(d_model=8, headdim=4)
    with pytest.raises(ValueError, match="d_model|8"):
        m(torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="seq_idx"):
        m(torch.randn(1, 5, 8), seq_idx=torch.zeros(1, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(d_model=8, headdim=5)


# --------------------------------------------------------------------------- GPU parity
def _fused_available():
    return torch.cuda.is_available() and not isinstance(mamba2_module.load_fused_ops(), str)


@pytest.mark.gpu
@pytest.mark.parametrize("use_mem_eff_path", [True, False])
def test_fused_matches_pure_on_gpu(monkeypatch, use_mem_eff_path):
    if not _fused_available():
        pytest.skip("mamba_ssm / causal_conv1d not importable")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    m = randomize_(Mamba2(d_model=192, d_state=48, headdim=192, chunk_size=256,
                          use_mem_eff_path=use_mem_eff_path)).cuda()
    u = torch.randn(2, 1000, 192, device="cuda", requires_grad=True)
    seq_idx = torch.cat([torch.zeros(2, 300), torch.ones(2, 700)], 1).int().cuda()

    def run(backend, s, autocast):
        monkeypatch.setenv(BACKEND_ENV_VAR, backend)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = m(u, seq_idx=s)
        grads = torch.autograd.grad(out.float().square().sum(), [u] + list(m.parameters()))
        return out.float(), grads

    for s in (None, seq_idx):
        for autocast, tol in ((False, 1e-3), (True, 2e-2)):
            out_f, grads_f = run("fused", s, autocast)
            out_p, grads_p = run("pure", s, autocast)
            assert rel_err(out_f, out_p) <= tol
            # Gradients are sums over 2000 tokens in different orders: a looser bound.
            for g_f, g_p in zip(grads_f, grads_p):
                assert rel_err(g_f, g_p) <= 5 * tol


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("with_gate", [False, True])
@pytest.mark.parametrize("tile_rows", [3, 512])  # 8 rows in tiles of 3 (the last one short), one tile
def test_rmsnorm_gated_gradcheck(monkeypatch, norm_before_gate, with_gate, tile_rows):
    monkeypatch.setattr(gated_norm, "NORM_TILE_ROWS", tile_rows)
    norm = RMSNormGated(6, group_size=3, norm_before_gate=norm_before_gate).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0, -1.0, 0.3]))
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True) if with_gate else None
    inputs = (x, z, norm.weight) if with_gate else (x, norm.weight)
    fn = (lambda a, b, w: norm(a, b)) if with_gate else (lambda a, w: norm(a))
    assert torch.autograd.gradcheck(fn, inputs)


# --------------------------------------------------------------------------- fast op vs reference
@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_fast_scan_matches_the_papers_chunked_ssd_and_the_recurrence(chunk):
    """ops.mamba_chunk_scan_combined (tiled, hand-written backward) against ssd_minimal (the
    paper's listing) and sequential_scan, outputs, final states and gradients, fp64."""
    gen = torch.Generator().manual_seed(3)
    kw = dict(dtype=torch.float64, generator=gen)
    b, l, h, p, n, g = 2, 45, 4, 3, 5, 2
    x, dt_raw = torch.randn(b, l, h, p, **kw), torch.randn(b, l, h, **kw)
    A, D = -torch.rand(h, **kw) * 3, torch.randn(h, **kw)
    B, C, z = torch.randn(b, l, g, n, **kw), torch.randn(b, l, g, n, **kw), torch.randn(b, l, h, p, **kw)
    h0 = torch.randn(b, h, p, n, **kw)
    inputs = [t.requires_grad_(True) for t in (x, dt_raw, B, C)]

    def grads(fn):
        y, final = fn(*inputs)
        (y.sum() + final.sum()).backward()
        out = [y.detach(), final.detach()] + [t.grad.clone() for t in inputs]
        for t in inputs:
            t.grad = None
        return out

    fast = grads(lambda x, d, B, C: ops.mamba_chunk_scan_combined(
        x, d, A, B, C, chunk, D=D, z=z, initial_states=h0, dt_softplus=True, return_final_states=True))
    minimal = grads(lambda x, d, B, C: ssd_minimal(x, F.softplus(d), A, B, C, chunk, D=D, z=z,
                                                   initial_states=h0))
    recurrence = grads(lambda x, d, B, C: sequential_scan(x, F.softplus(d), A, B, C, D=D, z=z,
                                                          initial_states=h0))
    for a, m, r in zip(fast, minimal, recurrence):
        assert rel_err(a, m) < 1e-10 and rel_err(m, r) < 1e-10


@pytest.mark.parametrize("tile", [2, 1024])
def test_fast_conv_matches_conv1d(monkeypatch, tile):
    monkeypatch.setattr(tiles, "CONV_TILE_TOKENS", tile)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 11, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, generator=gen)
    fast = ops.causal_conv1d(x, w, bias, activation="silu")
    ref = causal_conv1d_minimal(x, w, bias, activation="silu")
    assert rel_err(fast, ref) < 1e-12
    g_fast = torch.autograd.grad(fast.sum(), (x, w))
    g_ref = torch.autograd.grad(ref.sum(), (x, w))
    assert all(rel_err(a, b) < 1e-12 for a, b in zip(g_fast, g_ref))


@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_fast_gated_norm_matches_the_reference(monkeypatch, norm_before_gate):
    monkeypatch.setattr(gated_norm, "NORM_TILE_ROWS", 3)
    gen = torch.Generator().manual_seed(5)
    x, z = (torch.randn(8, 6, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(2))
    w = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    fast = ops.gated_rms_norm(x, z, w, 1e-5, 3, norm_before_gate)
    ref = gated_rms_norm_minimal(x, z, w, 1e-5, 3, norm_before_gate)
    assert rel_err(fast, ref) < 1e-12
    g_fast = torch.autograd.grad((fast * fast).sum(), (x, z, w))
    g_ref = torch.autograd.grad((ref * ref).sum(), (x, z, w))
    assert all(rel_err(a, b) < 1e-10 for a, b in zip(g_fast, g_ref))
