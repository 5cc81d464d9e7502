"""FMamba backbone: released key layout, parameter counts, background removal, loss, packing."""
import math

import pytest
import torch

from neuromamba.models import FMamba, VARIANTS, variant_config
from neuromamba.models.embedding import patchify
from neuromamba.models.fmamba import BackboneOutput, run_block

IMG = (24, 24, 24, 4)
PATCH = (6, 6, 6, 2)
TINY = dict(embed_dim=16, depth=2, d_state=8, headdim=16, img_size=IMG, patch_size=PATCH, chunk_size=32)


def released_shapes(embed_dim, depth, d_state, headdim, num_tokens):
    """SPEC §5 key -> shape, written out independently of the model code."""
    d_inner = 2 * embed_dim
    nheads = d_inner // headdim
    conv_dim = d_inner + 2 * d_state
    shapes = {"embedder.projection": (432, embed_dim), "embedder.pos": (1, num_tokens, embed_dim)}
    for i in range(depth):
        p = f"mamba_layers.{i}."
        shapes[p + "0.weight"] = (embed_dim,)
        shapes[p + "1.dt_bias"] = (nheads,)
        shapes[p + "1.A_log"] = (nheads,)
        shapes[p + "1.D"] = (nheads,)
        shapes[p + "1.in_proj.weight"] = (2 * d_inner + 2 * d_state + nheads, embed_dim)
        shapes[p + "1.conv1d.weight"] = (conv_dim, 1, 4)
        shapes[p + "1.conv1d.bias"] = (conv_dim,)
        shapes[p + "1.norm.weight"] = (d_inner,)
        shapes[p + "1.out_proj.weight"] = (embed_dim, d_inner)
    shapes["norm.weight"] = (embed_dim,)
    shapes["output_layer.weight"] = (432, embed_dim)
    shapes["output_layer.bias"] = (432,)
    return shapes


@pytest.mark.parametrize("name,expected_params", [("small", 1.4e6), ("base", 3.1e6), ("medium", 5.4e6), ("large", 11.9e6)])
def test_variant_state_dict_and_params(name, expected_params):
    # A small img_size keeps the pos buffer tiny; it is a buffer, so the parameter count is unaffected.
    model = FMamba.from_variant(name, img_size=(12, 12, 12, 4))
    cfg = variant_config(name)
    expected = released_shapes(**cfg, num_tokens=2 * 2 * 2 * 2)
    state = model.state_dict()
    assert len(state) == 113
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - expected_params) / expected_params < 0.02, params
    assert "embedder.pos" not in dict(model.named_parameters())


def test_variant_registry_and_overrides():
    assert variant_config("Base") == dict(embed_dim=192, depth=12, d_state=48, headdim=192)
    assert set(VARIANTS) == {"small", "base", "medium", "large"}
    model = FMamba.from_variant("small", depth=2, img_size=IMG, pretraining=False)
    assert model.embed_dim == 128 and len(model.mamba_layers) == 2 and model.output_layer is None
    with pytest.raises(ValueError, match="unknown model variant 'huge'.*small"):
        FMamba.from_variant("huge")


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="headdim 24 must divide"):
        FMamba(**{**TINY, "headdim": 24})
    with pytest.raises(ValueError, match="not divisible"):
        FMamba(**{**TINY, "img_size": (25, 24, 24, 4)})
    with pytest.raises(ValueError, match="background_removal"):
        FMamba(**TINY, background_removal="sample")
    model = FMamba(**TINY)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, 24, 24, 24, 4\)"):
        model(torch.randn(1, 1, 24, 24, 24, 6))


def manual_forward(model, tokens, positions, seq_idx=None):
    """Reference forward: embedding at the true positions, the blocks, the final norm."""
    h = tokens @ model.embedder.projection + model.embedder.pos[0][positions]
    for block in model.mamba_layers:
        norm, mixer, _ = block
        h = h + mixer(norm(h), seq_idx=seq_idx)
    return model.norm(h)


def known_brain_volume(batch=2):
    """Background = -2, the minimum; brain values are clamped above it."""
    x = torch.full((batch, 1, *IMG), -2.0)
    x[:, 0, 0:12, 0:6, 0:6, :] = torch.randn(batch, 12, 6, 6, 4).clamp(-1.5, 3)  # grid (0..1, 0, 0, *) -> 0, 1, 32, 33
    x[0, 0, 7, 13, 20, 3] = 0.5  # one voxel in sample 0 only -> token 55
    x[1, 0, 18:24, 18:24, 18:24, 0:2] = torch.randn(6, 6, 6, 2).clamp(-1.5, 3)  # sample 1 only -> token 126
    return x


def test_no_removal_keeps_every_token():
    model = FMamba(**TINY).eval()
    x = torch.randn(2, 1, *IMG)
    out = model(x)
    assert isinstance(out, BackboneOutput)
    assert out.features.shape == (2, 128, 16) and out.tokens.shape == (2, 128, 432)
    assert out.seq_idx is None and out.lengths.tolist() == [128, 128] and out.num_tokens_total == 128
    assert torch.equal(out.tokens, patchify(x, PATCH))
    # final RMSNorm with unit weight -> unit root-mean-square features
    rms = out.features.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)


def test_batch_removal_keeps_expected_tokens_with_true_positions():
    model = FMamba(**TINY, background_removal="batch").eval()
    x = known_brain_volume()
    out = model(x)
    keep = [0, 1, 32, 33, 55, 126]
    assert out.keep_index.tolist() == [keep, keep]
    assert out.lengths.tolist() == [6, 6]
    assert torch.equal(out.tokens, patchify(x, PATCH)[:, keep])
    with torch.no_grad():
        expected = manual_forward(model, out.tokens, torch.tensor(keep).expand(2, 6))
    assert torch.allclose(out.features, expected, atol=1e-5)


def test_next_token_loss_matches_manual_shift_by_one_kept_token():
    model = FMamba(**TINY, background_removal="batch").eval()
    x = known_brain_volume()
    out = model(x)
    full = patchify(x, PATCH)
    keep = [0, 1, 32, 33, 55, 126]
    losses = []
    for b in range(2):
        for i in range(len(keep) - 1):
            pred = model.output_layer(out.features[b, i])
            losses.append(((pred - full[b, keep[i + 1]]) ** 2).mean())
    assert torch.allclose(model.next_token_loss(out), torch.stack(losses).mean(), atol=1e-6)


def test_packed_equals_running_samples_separately_and_loss_stays_within_samples():
    torch.manual_seed(1)
    model = FMamba(**TINY, background_removal="packed").eval()
    x = known_brain_volume()
    x[1, 0, 0:24, 0:12] = torch.randn(24, 12, 24, 4).clamp(-1.5, 3)  # sample 1: many tokens, several chunks
    out = model(x)
    assert out.features.shape[0] == 1 and out.seq_idx.dtype == torch.int32
    lengths = out.lengths.tolist()
    assert lengths[0] == 5  # tokens 0, 1, 32, 33, 55
    assert out.keep_index[0, : lengths[0]].tolist() == [0, 1, 32, 33, 55]
    assert out.seq_idx[0].tolist() == [0] * lengths[0] + [1] * lengths[1]

    start = 0
    total_sq, total_n = 0.0, 0
    for b, n in enumerate(lengths):
        single = model(x[b : b + 1])  # a single sample: packed == its own mask
        seg = slice(start, start + n)
        assert torch.equal(out.keep_index[0, seg], single.keep_index[0])
        assert torch.allclose(out.features[0, seg], single.features[0], atol=1e-5)
        pred = model.output_layer(single.features[0, :-1])
        total_sq += ((pred - single.tokens[0, 1:]) ** 2).mean(-1).sum()
        total_n += n - 1
        start += n
    assert torch.allclose(model.next_token_loss(out), total_sq / total_n, atol=1e-6)


def test_loss_requires_output_layer():
    model = FMamba(**TINY)
    out = model(torch.randn(1, 1, *IMG))
    model.drop_output_layer()
    assert model.output_layer is None
    assert not any(k.startswith("output_layer") for k in model.state_dict())
    with pytest.raises(RuntimeError, match="no output layer"):
        model.next_token_loss(out)
    assert FMamba(**TINY, pretraining=False).output_layer is None
    assert FMamba(**TINY).output_layer.bias is not None


@pytest.mark.parametrize("mode", ["none", "packed"])
def test_prompt_tokens_are_prepended_per_sample(mode):
    model = FMamba(**TINY, background_removal=mode).eval()
    prompt = torch.randn(3, 16, requires_grad=True)
    x = known_brain_volume()
    out = model(x, prompt=prompt)
    plain = model(x)
    assert out.features.shape == plain.features.shape
    assert torch.equal(out.tokens, plain.tokens)
    assert not torch.allclose(out.features, plain.features)
    # reference: each sample on its own with the prompt in front, prompt positions removed
    start = 0
    for b, n in enumerate(out.lengths.tolist()):
        single = model(x[b : b + 1])
        h = single.tokens @ model.embedder.projection + model.embedder.pos[0][single.keep_index]
        h = torch.cat([prompt.unsqueeze(0), h], dim=1)
        for block in model.mamba_layers:
            h = run_block(block, h, None)
        expected = model.norm(h)[0, 3:]
        got = out.features[0, start : start + n] if mode == "packed" else out.features[b]
        assert torch.allclose(got, expected, atol=1e-5)
        start += n
    out.features.sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"prompt must have shape \(K, 16\)"):
        model(x, prompt=torch.randn(3, 8))


def test_grad_checkpointing_matches_plain():
    torch.manual_seed(2)
    plain = FMamba(**TINY, background_removal="packed")
    ckpt = FMamba(**TINY, background_removal="packed", grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = known_brain_volume()
    losses = []
    for model in (plain, ckpt):
        loss = model.next_token_loss(model(x))
        loss.backward()
        losses.append(loss)
    assert torch.allclose(losses[0], losses[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_bf16_autocast_forward_backward_finite():
    model = FMamba(**TINY, background_removal="batch")
    x = known_brain_volume()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = model.next_token_loss(out)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_pos_seed_is_reproducible_and_saved():
    a = FMamba(**TINY)
    b = FMamba(**TINY)
    c = FMamba(**TINY, pos_seed=1)
    assert torch.equal(a.embedder.pos, b.embedder.pos)
    assert not torch.equal(a.embedder.pos, c.embedder.pos)
    assert torch.equal(a.state_dict()["embedder.pos"], a.embedder.pos)
    assert math.prod(a.state_dict()["embedder.pos"].shape) == 128 * 16


@pytest.mark.parametrize("mode", ["none", "batch", "packed"])
def test_to_grid_puts_kept_tokens_back_in_voxel_space(mode):
    from neuromamba.models.embedding import unpatchify

    model = FMamba(**TINY, background_removal=mode).eval()
    x = known_brain_volume()
    out = model(x)
    grid_tokens = out.to_grid(out.tokens, fill=-2.0)  # background of known_brain_volume is -2
    assert grid_tokens.shape == (2, 128, 432)
    assert torch.equal(unpatchify(grid_tokens, IMG, PATCH), x)
    per_token = out.to_grid(torch.ones(out.features.shape[:2]))
    assert per_token.sum(1).tolist() == out.lengths.float().tolist()
    with pytest.raises(ValueError, match="kept-token shape"):
        out.to_grid(torch.ones(3, 3))


def test_from_spec_builds_the_model_a_spec_names():
    """One way from a resolved spec to the backbone: training, dry runs and backbone files all
    go through FMamba.from_spec (the tuned input's static token is part of the model's clip)."""
    from neuromamba.spec import spec_from_config

    spec = spec_from_config({"embed_dim": 16, "depth": 1, "d_state": 8, "headdim": 16,
                             "img_size": [24, 24, 24, 4], "patch_size": [6, 6, 6, 2],
                             "input_scaling_method": "voxel_demean_static", "img_size_meaning": "raw_frames"})
    model = FMamba.from_spec(spec.model, background_value=spec.background_value, pretraining=False)
    assert model.img_size == (24, 24, 24, 6) and model.num_tokens == 4 * 4 * 4 * 3
    assert (model.embed_dim, model.depth, model.background_value) == (16, 1, "zero")
