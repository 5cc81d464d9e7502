"""The connectivity head: parcel courses on the token grid, exact correlations, the static token
left out, per-sample results in packed mode, and a coupled pair found among many."""
import numpy as np
import pytest
import torch

from neuromamba.models import build_head
from neuromamba.models.connectivity import ConnectivityHead, parcel_blocks
from neuromamba.models.fmamba import BackboneOutput


def grid_output(features, keep=None):
    """Padded BackboneOutput of full-grid ``features`` (B, N, C), or of the tokens ``keep``."""
    b, n, _ = features.shape
    keep = torch.arange(n) if keep is None else keep
    return BackboneOutput(features[:, keep], torch.zeros(b, len(keep), 4), None, torch.full((b,), len(keep)),
                          keep.expand(b, -1), n)


def value_head(grid, **kwargs):
    """A head whose one channel is the token's first feature."""
    head = ConnectivityHead(3, 2, grid, channels=1, **kwargs)
    with torch.no_grad():
        head.course.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        head.course.bias.zero_()
    return head


def test_parcels_pool_the_token_grid_to_at_most_8_a_side():
    assert parcel_blocks((8, 8, 8, 5)) == (1, 1, 1)  # 48^3 clips: a parcel is a patch
    assert parcel_blocks((16, 16, 16, 10)) == (2, 2, 2)  # 96^3: 512 parcels
    assert parcel_blocks((18, 9, 9, 3)) == (3, 2, 2)
    with pytest.raises(ValueError, match=">= 2 time tokens"):
        ConnectivityHead(8, 2, (2, 2, 2, 2), static_time_tokens=1)


def test_correlations_are_those_of_the_parcels_time_courses():
    torch.manual_seed(0)
    grid = (2, 2, 2, 6)  # 8 patches x 6 time tokens, time fastest
    head = value_head(grid)
    features = torch.randn(1, 48, 3)
    corr = head.correlations(grid_output(features))[0]
    courses = features[0, :, 0].view(8, 6).numpy()
    expected = np.corrcoef(courses)[np.triu_indices(8, 1)]
    assert torch.allclose(corr, torch.from_numpy(expected).float(), atol=1e-5)


def test_the_static_time_token_is_part_of_no_course():
    torch.manual_seed(1)
    grid = (2, 2, 2, 5)
    head = value_head(grid, static_time_tokens=1)
    features = torch.randn(1, 40, 3)
    changed = features.clone()
    changed.view(1, 8, 5, 3)[:, :, 0] += 100.0  # the static token of every patch
    out, out_changed = head(grid_output(features)), head(grid_output(changed))
    assert torch.allclose(out, out_changed)
    # and without the static token's skip the same change is seen
    plain = value_head(grid)
    assert not torch.allclose(plain.correlations(grid_output(features)),
                              plain.correlations(grid_output(changed)))


def test_a_packed_sample_gives_what_it_gives_alone():
    torch.manual_seed(2)
    grid = (2, 2, 2, 4)
    head = build_head("connectivity", 8, 3, token_grid=grid)
    torch.nn.init.normal_(head.pair_scores, std=0.5)
    features = torch.randn(2, 32, 8)
    kept_first = torch.arange(20)  # sample 0 lost its last 3 patches to background removal
    packed = BackboneOutput(torch.cat([features[0, :20], features[1]])[None], torch.zeros(1, 52, 4),
                            torch.cat([torch.zeros(20), torch.ones(32)]).int()[None], torch.tensor([20, 32]),
                            torch.cat([kept_first, torch.arange(32)])[None], 32)
    together = head(packed)
    assert torch.allclose(together[0], head(grid_output(features[:1], kept_first))[0], atol=1e-5)
    assert torch.allclose(together[1], head(grid_output(features[1:]))[0], atol=1e-5)


def test_it_finds_the_one_coupled_pair_among_two_thousand():
    """64 parcels (2,016 pairs), 48 training clips of 8 time tokens; class 1 shares one course
    between parcels 5 and 40. The softmax over pair scores settles on that pair."""
    gen = torch.Generator().manual_seed(3)

    def clips(n):
        labels = torch.arange(n) % 2
        courses = torch.randn(n, 64, 8, generator=gen)
        courses[labels == 1, 40] = courses[labels == 1, 5] + 0.3 * torch.randn(int(labels.sum()), 8, generator=gen)
        features = torch.zeros(n, 64 * 8, 3)
        features[..., 0] = courses.reshape(n, -1)
        return features, labels

    torch.manual_seed(3)
    head = value_head((4, 4, 4, 8))
    head.course.requires_grad_(False)
    train, test = clips(48), clips(48)
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(20):
        for i in range(0, 48, 4):
            loss = torch.nn.functional.cross_entropy(head(grid_output(train[0][i:i + 4])), train[1][i:i + 4])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (head(grid_output(test[0])).argmax(1) == test[1]).float().mean().item()
        weights = torch.softmax(head.score_scale * head.pair_scores, dim=-1)
    pairs = head.pairs.shape[1]
    top = int(weights.sum(0).argmax()) % pairs
    assert tuple(head.pairs[:, top].tolist()) == (5, 40)
    assert accuracy >= 0.9
