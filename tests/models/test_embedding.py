"""Patchify order, its inverse, positional encodings and background-token selection."""
import math

import pytest
import torch

from neuromamba.models.embedding import (
    POS_EMBEDDINGS,
    Embedder,
    brain_token_mask,
    build_pos_encoding,
    grid_coordinates,
    grid_size,
    nerf_features,
    patchify,
    select_tokens,
    unpatchify,
)

IMG = (24, 24, 24, 4)
PATCH = (6, 6, 6, 2)


def test_grid_size_and_divisibility_error():
    assert grid_size(IMG, PATCH) == (4, 4, 4, 2)
    assert grid_size((96, 96, 96, 20), PATCH) == (16, 16, 16, 10)
    with pytest.raises(ValueError, match=r"img_size \(64, 64, 64, 20\).*patch_size \(6, 6, 6, 2\).*D: 64 % 6 = 4"):
        grid_size((64, 64, 64, 20), PATCH)
    with pytest.raises(ValueError, match="4 positive integers"):
        grid_size((24, 24, 24), PATCH)


def test_token_order_matches_hand_built_example():
    # Tiny clip 2x2x2x4, patch 1x1x2x2 -> grid (2, 2, 1, 2): each voxel holds a unique code.
    d, h, w, t = 2, 2, 2, 4
    x = torch.zeros(1, 1, d, h, w, t)
    for i in range(d):
        for j in range(h):
            for k in range(w):
                for s in range(t):
                    x[0, 0, i, j, k, s] = 1000 * i + 100 * j + 10 * k + s
    tokens = patchify(x, (1, 1, 2, 2))
    assert tokens.shape == (1, 2 * 2 * 1 * 2, 4)
    expected = []
    for gd in range(2):  # row-major over (d, h, w, t), t fastest
        for gh in range(2):
            for gw in range(1):
                for gt in range(2):
                    values = []
                    for sw in range(2):  # inside a token: (sd, sh, sw, st), st fastest
                        for st in range(2):
                            values.append(1000 * gd + 100 * gh + 10 * (2 * gw + sw) + (2 * gt + st))
                    expected.append(values)
    assert torch.equal(tokens[0], torch.tensor(expected, dtype=torch.float32))


def test_token_order_time_fastest_in_default_patch():
    x = torch.arange(math.prod(IMG), dtype=torch.float32).reshape(1, 1, *IMG)
    tokens = patchify(x, PATCH)
    assert tokens.shape == (1, 4 * 4 * 4 * 2, 432)
    # token 1 is the next time patch of token 0; token 2 is the next w patch
    assert tokens[0, 1, 0] == x[0, 0, 0, 0, 0, 2]
    assert tokens[0, 2, 0] == x[0, 0, 0, 0, 6, 0]
    assert tokens[0, 8, 0] == x[0, 0, 0, 6, 0, 0]
    assert tokens[0, 32, 0] == x[0, 0, 6, 0, 0, 0]
    # value 1 of a token is st=1, value 2 is sw=1
    assert tokens[0, 0, 1] == x[0, 0, 0, 0, 0, 1]
    assert tokens[0, 0, 2] == x[0, 0, 0, 0, 1, 0]
    assert tokens[0, 0, 12] == x[0, 0, 0, 1, 0, 0]
    assert tokens[0, 0, 72] == x[0, 0, 1, 0, 0, 0]


def test_unpatchify_inverts_patchify():
    x = torch.randn(3, 1, 12, 18, 24, 4)
    tokens = patchify(x, PATCH)
    assert torch.equal(unpatchify(tokens, x.shape[2:], PATCH), x)
    with pytest.raises(ValueError, match="expected tokens of shape"):
        unpatchify(tokens[:, :-1], x.shape[2:], PATCH)


def test_patchify_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W, T\)"):
        patchify(torch.zeros(1, 24, 24, 24, 4), PATCH)
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 1, 25, 24, 24, 4), PATCH)


def test_grid_coordinates_token_order():
    coords = grid_coordinates((4, 4, 4, 2))
    assert coords.shape == (128, 4)
    assert torch.equal(coords[0], torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(coords[1], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))  # t fastest
    assert torch.allclose(coords[2], torch.tensor([0, 0, 1 / 3, 0], dtype=torch.float64))
    assert torch.allclose(coords[-1], torch.ones(4, dtype=torch.float64))


def test_nerf_feature_layout():
    coords = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    feats = nerf_features(coords)
    assert feats.shape == (1, 84)
    assert torch.equal(feats[:, :4], coords)
    for k in range(10):
        start = 4 + 8 * k
        assert torch.allclose(feats[:, start:start + 4], torch.sin(coords * 2**k))
        assert torch.allclose(feats[:, start + 4:start + 8], torch.cos(coords * 2**k))


def test_nerf_pos_is_features_times_seeded_gaussian():
    grid = (4, 4, 4, 2)
    pos = build_pos_encoding("nerf", grid, 16, seed=3)
    gen = torch.Generator().manual_seed(3)
    gaussian = torch.randn(84, 16, generator=gen, dtype=torch.float64)
    expected = (nerf_features(grid_coordinates(grid)) @ gaussian).float()
    assert pos.shape == (1, 128, 16) and pos.dtype == torch.float32
    assert torch.allclose(pos[0], expected)
    assert torch.equal(pos, build_pos_encoding("nerf", grid, 16, seed=3))  # reproducible
    assert not torch.equal(pos, build_pos_encoding("nerf", grid, 16, seed=4))


@pytest.mark.parametrize("name", sorted(POS_EMBEDDINGS))
def test_every_pos_embedding_builds(name):
    pos = build_pos_encoding(name, (4, 4, 4, 2), 24)
    assert pos.shape == (1, 128, 24)
    assert torch.isfinite(pos).all()
    if name == "none":
        assert torch.count_nonzero(pos) == 0
    else:
        assert len({tuple(r.tolist()) for r in pos[0]}) == 128  # every token distinguishable


def test_unknown_pos_embedding():
    with pytest.raises(ValueError, match="unknown pos_embedding 'rope'.*nerf"):
        build_pos_encoding("rope", (4, 4, 4, 2), 8)


def test_embedder_pos_is_persistent_buffer():
    emb = Embedder(16, IMG, PATCH)
    assert "pos" in dict(emb.named_buffers())
    assert "pos" not in dict(emb.named_parameters())
    assert set(emb.state_dict()) == {"projection", "pos"}
    assert emb.projection.shape == (432, 16)
    assert abs(emb.projection.std().item() - 1.0) < 0.05  # N(0, 1) init
    tokens = torch.randn(2, 3, 432)
    positions = torch.tensor([[0, 5, 7], [1, 2, 127]])
    out = emb(tokens, positions)
    expected = tokens @ emb.projection + emb.pos[0][positions]
    assert torch.allclose(out, expected)


def _volume_with_known_brain(batch=2):
    """Background = the minimum (-2); brain boxes chosen so the kept tokens are known."""
    x = torch.full((batch, 1, *IMG), -2.0)
    x[0, 0, 0:6, 0:6, 0:6, :] = 1.0  # grid (0,0,0,*) -> tokens 0, 1
    x[0, 0, 7, 13, 20, 3] = 0.5  # a single voxel: grid (1, 2, 3, 1) -> token 32+16+6+1 = 55
    if batch > 1:
        x[1, 0, 18:24, 18:24, 18:24, 0:2] = 3.0  # grid (3,3,3,0) -> token 126
        x[1, 0, 0, 0, 0, 0] = 1.0  # token 0 again
    return x


def test_brain_mask_min_and_zero_background():
    x = _volume_with_known_brain()
    tokens = patchify(x, PATCH)
    mask = brain_token_mask(tokens, "min")
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 55]
    assert mask[1].nonzero().flatten().tolist() == [0, 126]
    # with "zero", every -2 voxel counts as brain
    assert brain_token_mask(tokens, "zero").all()
    z = x.clamp(min=0) * (x > -2)
    assert brain_token_mask(patchify(z, PATCH), "zero")[0].nonzero().flatten().tolist() == [0, 1, 55]
    with pytest.raises(ValueError, match="background_value"):
        brain_token_mask(tokens, "mean")


def test_select_tokens_modes():
    x = _volume_with_known_brain()
    tokens = patchify(x, PATCH)
    none = select_tokens(tokens, "none")
    assert none.tokens.shape == (2, 128, 432) and none.seq_idx is None
    assert none.lengths.tolist() == [128, 128]

    batch = select_tokens(tokens, "batch")
    assert batch.positions.tolist() == [[0, 1, 55, 126]] * 2
    assert torch.equal(batch.tokens, tokens[:, [0, 1, 55, 126]])
    assert batch.lengths.tolist() == [4, 4] and batch.seq_idx is None

    packed = select_tokens(tokens, "packed")
    assert packed.positions.tolist() == [[0, 1, 55, 0, 126]]
    assert packed.seq_idx.dtype == torch.int32
    assert packed.seq_idx.tolist() == [[0, 0, 0, 1, 1]]
    assert packed.lengths.tolist() == [3, 2]
    assert torch.equal(packed.tokens[0, 3], tokens[1, 0])
    assert torch.equal(packed.tokens[0, 2], tokens[0, 55])


def test_select_tokens_rejects_empty_sample():
    x = _volume_with_known_brain()
    x[1] = 5.0  # constant -> every voxel equals its minimum
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\].*no brain tokens"):
        select_tokens(patchify(x, PATCH), "packed")
    with pytest.raises(ValueError, match="unknown background_removal"):
        select_tokens(patchify(x, PATCH), "sample")
