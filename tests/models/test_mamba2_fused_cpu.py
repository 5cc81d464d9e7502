"""mamba_ssm's real Mamba2 kernels against the project's pure path, on CPU, through our dispatch.

Triton runs mamba_ssm's Triton kernels on CPU tensors in its interpreter (TRITON_INTERPRET=1,
fp32); ``setup_env.sh --dev`` installs mamba-ssm without its CUDA build for this. Every test here
forces ``NEUROMAMBA_MAMBA_BACKEND=fused`` and checks, through ``Mamba2.last_path``, that
mamba_ssm's kernels ran (``scan_only``: the project's conv, mamba_ssm's chunked scan and gated
RMSNorm), then compares outputs, the input gradient and every parameter gradient with the pure
path. The interpreter is slow (~10 s per layer forward+backward), so the shapes are small but
span several chunks, two packed sequences and groups.

The one thing the interpreter cannot run is causal-conv1d's CUDA conv kernel, which
``mamba_split_conv1d_scan_combined`` (the mem-efficient ``fused`` path) calls. That test stands
in for those two C++ functions only; the rest of the combined function is mamba_ssm's own.
"""
import platform

import pytest
import torch

from neuromamba.models import FMamba, ops
from neuromamba.models import fused_kernels
from neuromamba.models import mamba2 as mamba2_module
from neuromamba.models.mamba2 import BACKEND_ENV_VAR, Mamba2

TOL = 1e-4  # fp32, relative to the largest value: sums in another order, nothing more


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def fused_ops():
    """mamba_ssm's kernels loaded under the interpreter (tests/conftest.py sets TRITON_INTERPRET=1
    on machines without CUDA before anything imports Triton)."""
    if platform.system() != "Linux":
        pytest.skip("Triton (and so mamba_ssm's kernels) installs on Linux only")
    if not fused_kernels.triton_interpreter_on():
        pytest.skip("CUDA machine: the fused kernels are compared on the GPU (test_mamba2.py, gpu)")
    fused_kernels.load_fused_ops.cache_clear()
    loaded = fused_kernels.load_fused_ops()
    if isinstance(loaded, str):
        pytest.fail(f"{loaded}: install the test dependencies with `bash setup_env.sh --dev`")
    yield loaded
    fused_kernels.load_fused_ops.cache_clear()


def randomize_(module, seed=0):
    """Non-trivial norm weights, D, biases, so every term of the layer shows in the comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".D") or name == "D":
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return module


def run_layer(layer, u, seq_idx, grad_out):
    """(the path that ran, output, gradients of the input and of every parameter)."""
    out = layer(u, seq_idx=seq_idx)
    return layer.last_path, out, torch.autograd.grad(out, [u] + list(layer.parameters()), grad_out)


def assert_paths_agree(layer, fused, pure):
    """Output, input gradient and every parameter gradient within TOL of the pure path's."""
    assert rel_err(fused[1], pure[1]) <= TOL
    names = ["input"] + [n for n, _ in layer.named_parameters()]
    for pname, g_fused, g_pure in zip(names, fused[2], pure[2]):
        assert rel_err(g_fused, g_pure) <= TOL, pname


LAYERS = {
    # plain batches, one group, D per head, gated RMSNorm after the gate (Mamba2's default)
    "plain": (dict(d_model=16, d_state=8, headdim=8, chunk_size=16), False),
    # several sequences packed in a row, two groups, D per channel, norm before the gate
    "packed_groups": (dict(d_model=16, d_state=8, headdim=8, ngroups=2, D_has_hdim=True,
                           norm_before_gate=True, chunk_size=16), True),
    # no RMSNorm: the scan applies the z gate itself; dt limits, biases, a gated-MLP part
    "z_in_scan": (dict(d_model=16, d_state=8, headdim=8, rmsnorm=False, dt_limit=(0.01, 0.2),
                       bias=True, d_ssm=16, chunk_size=16), False),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_real_kernels_match_the_pure_path(monkeypatch, fused_ops, name):
    config, packed = LAYERS[name]
    torch.manual_seed(0)
    layer = randomize_(Mamba2(**config))
    u = torch.randn(2, 40, layer.d_model, requires_grad=True)  # 40 tokens: 3 chunks of 16
    seq_idx = (torch.tensor([[0] * 11 + [1] * 29, [0] * 23 + [1] * 17], dtype=torch.int32)
               if packed else None)
    grad_out = torch.randn(2, 40, layer.d_model)
    results = {}
    for backend in ("fused", "pure"):
        monkeypatch.setenv(BACKEND_ENV_VAR, backend)
        results[backend] = run_layer(layer, u, seq_idx, grad_out)
    assert results["fused"][0] == "scan_only" and results["pure"][0] == "pure"
    assert_paths_agree(layer, results["fused"], results["pure"])
    if packed:  # the boundary is real: without seq_idx the second sequence's output differs
        monkeypatch.setenv(BACKEND_ENV_VAR, "fused")
        with torch.no_grad():
            unpacked = layer(u)
        assert rel_err(unpacked[0, 11:], results["fused"][1][0, 11:]) > 1e-3


def test_whole_backbone_with_packed_background_removal(monkeypatch, fused_ops):
    """FMamba forward+backward, packed removal (one row, seq_idx), on both paths: same loss,
    same gradient for every parameter."""
    torch.manual_seed(3)
    model = randomize_(FMamba(embed_dim=16, depth=2, d_state=8, headdim=16, img_size=(24, 24, 24, 4),
                              patch_size=(6, 6, 6, 2), chunk_size=16, background_removal="packed"))
    x = torch.zeros(2, 1, 24, 24, 24, 4)
    x[0, 0, 6:18, 0:12] = torch.randn(12, 12, 24, 4)   # sample 0: 2 x 2 x 4 x 2 = 32 tokens
    x[1, 0, 0:12, 6:24, 6:18] = torch.randn(12, 18, 12, 4)  # sample 1: 2 x 3 x 2 x 2 = 24 tokens
    results = {}
    for backend in ("fused", "pure"):
        monkeypatch.setenv(BACKEND_ENV_VAR, backend)
        out = model(x, brain_mask=x[:, 0].ne(0).any(-1))
        loss = model.next_token_loss(out)
        paths = {block[1].last_path for block in model.mamba_layers}
        results[backend] = (paths, out.lengths.tolist(), loss,
                            torch.autograd.grad(loss, list(model.parameters())))
    assert results["fused"][0] == {"scan_only"} and results["pure"][0] == {"pure"}
    assert results["fused"][1] == results["pure"][1] == [32, 24]
    assert abs(results["fused"][2].item() - results["pure"][2].item()) <= TOL * results["pure"][2].item()
    for (pname, _), g_fused, g_pure in zip(model.named_parameters(), results["fused"][3], results["pure"][3]):
        assert rel_err(g_fused, g_pure) <= TOL, pname


# --------------------------------------------------------------------------- the mem-efficient chain
def _conv_fwd_stand_in(x, weight, bias, seq_idx, initial_states, final_states_out, silu):
    """causal_conv1d's C++ forward, (b, d, s) layout, by the project's conv."""
    assert initial_states is None and final_states_out is None
    out = ops.causal_conv1d(x.transpose(1, 2), weight, bias, seq_idx=seq_idx,
                            activation="silu" if silu else None)
    return out.transpose(1, 2).contiguous()


def _conv_bwd_stand_in(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx,
                       return_dinitial_states, silu):
    """causal_conv1d's C++ backward: (dx written into ``dx`` when given, dweight, dbias, None)."""
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    bias_req = None if bias is None else bias.detach().requires_grad_()
    with torch.enable_grad():
        out = _conv_fwd_stand_in(x, weight, bias_req, seq_idx, None, None, silu)
        inputs = [x, weight] + ([] if bias_req is None else [bias_req])
        grads = torch.autograd.grad(out, inputs, dout)
    if dx is not None:
        dx.copy_(grads[0])
    return (grads[0] if dx is None else dx), grads[1], (None if bias is None else grads[2]), None


def test_mem_efficient_chain_with_a_stand_in_for_causal_conv1d(monkeypatch, fused_ops):
    """``mamba_split_conv1d_scan_combined``, mamba_ssm's default path, from in_proj's output to
    out_proj: mamba_ssm's own autograd function, scan, norm and gated MLP, with causal-conv1d's
    two CUDA conv functions (which the interpreter cannot run) stood in for by the project's
    conv. Checks the arguments our dispatch passes it (layout, A's sign, D, groups, the norm's
    group size and gate order, seq_idx) against the pure path."""
    from mamba_ssm.ops.triton import ssd_combined

    monkeypatch.setattr(ssd_combined, "causal_conv1d_fwd_function", _conv_fwd_stand_in)
    monkeypatch.setattr(ssd_combined, "causal_conv1d_bwd_function", _conv_bwd_stand_in)
    torch.manual_seed(5)
    layer = randomize_(Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, d_ssm=16,
                              norm_before_gate=False, chunk_size=16))
    u = torch.randn(1, 40, 16, requires_grad=True)
    seq_idx = torch.tensor([[0] * 17 + [1] * 23], dtype=torch.int32)
    grad_out = torch.randn(1, 40, 16)
    results = {}
    for backend in ("fused", "pure"):
        with monkeypatch.context() as patch:
            patch.setenv(BACKEND_ENV_VAR, backend)
            if backend == "fused":  # a conv function present, as with causal-conv1d on a GPU
                patch.setattr(mamba2_module, "select_backend",
                              lambda device: {**fused_ops, "causal_conv1d_fn": _conv_fwd_stand_in})
            results[backend] = run_layer(layer, u, seq_idx, grad_out)
    assert results["fused"][0] == "fused" and results["pure"][0] == "pure"
    assert_paths_agree(layer, results["fused"], results["pure"])


def test_auto_never_picks_the_interpreter(monkeypatch, fused_ops):
    """Even with the kernels loaded, ``auto`` on CPU runs the pure path (the interpreter is
    for tests; test_mamba2.py checks that forcing fused on CPU without it is refused)."""
    monkeypatch.setenv(BACKEND_ENV_VAR, "auto")
    layer = Mamba2(d_model=8, headdim=4)
    layer(torch.randn(1, 3, 8))
    assert layer.last_path == "pure"
