"""Heads: registry, output shapes, per-sample pooling in packed mode."""
import pytest
import torch

from neuromamba.models import HEADS, build_head
from neuromamba.models.fmamba import BackboneOutput
from neuromamba.models.heads import LinearHead, MambaHead, last_token, mean_pool

C = 16


def padded_output(features):
    b, length, _ = features.shape
    return BackboneOutput(
        features=features,
        tokens=torch.zeros(b, length, 432),
        seq_idx=None,
        lengths=torch.full((b,), length),
        keep_index=torch.arange(length).expand(b, length),
        num_tokens_total=length,
    )


def packed_output(samples):
    lengths = torch.tensor([s.shape[0] for s in samples])
    features = torch.cat(samples).unsqueeze(0)
    seq_idx = torch.repeat_interleave(torch.arange(len(samples), dtype=torch.int32), lengths).unsqueeze(0)
    return BackboneOutput(
        features=features,
        tokens=torch.zeros(1, features.shape[1], 432),
        seq_idx=seq_idx,
        lengths=lengths,
        keep_index=torch.cat([torch.arange(n) for n in lengths.tolist()]).unsqueeze(0),
        num_tokens_total=64,
    )


def test_registry_and_errors():
    from neuromamba.models.heads import AttentionHead, ConnectivityHead

    assert HEADS == {"linear": LinearHead, "mamba": MambaHead, "attention": AttentionHead,
                     "connectivity": ConnectivityHead}
    with pytest.raises(ValueError, match="unknown head 'mlp'.*'attention', 'connectivity', 'linear', 'mamba'"):
        build_head("mlp", C, 2)
    with pytest.raises(ValueError, match="num_outputs"):
        build_head("linear", C, 0)


@pytest.mark.parametrize("name", ["linear", "mamba"])
@pytest.mark.parametrize("num_outputs", [1, 2, 5])
def test_head_output_shapes(name, num_outputs):
    head = build_head(name, C, num_outputs)
    out = head(padded_output(torch.randn(3, 10, C)))
    assert out.shape == (3, num_outputs)
    assert torch.isfinite(out).all()


def test_mamba_head_layout():
    head = build_head("mamba", 64, 2)
    assert len(head.blocks) == 3
    mixer = head.blocks[0][1]
    assert mixer.A_log.shape == (2,)  # headdim = C -> 2 heads
    assert mixer.in_proj.weight.shape == (2 * 128 + 2 * 4 + 2, 64)  # d_state = 64 // 16 = 4


def test_linear_head_is_mean_then_linear():
    head = build_head("linear", C, 3)
    features = torch.randn(2, 7, C)
    expected = head.fc(features.mean(dim=1))
    assert torch.allclose(head(padded_output(features)), expected)


def test_pooling_helpers_per_sample_in_packed_mode():
    samples = [torch.randn(n, C) for n in (5, 1, 9)]
    out = packed_output(samples)
    assert torch.allclose(mean_pool(out), torch.stack([s.mean(0) for s in samples]), atol=1e-6)
    assert torch.equal(last_token(out), torch.stack([s[-1] for s in samples]))


@pytest.mark.parametrize("name", ["linear", "mamba"])
def test_packed_equals_each_sample_alone(name):
    head = build_head(name, C, 4).eval()
    samples = [torch.randn(n, C) for n in (5, 1, 40)]
    packed = head(packed_output(samples))
    alone = torch.cat([head(padded_output(s.unsqueeze(0))) for s in samples])
    assert packed.shape == (3, 4)
    assert torch.allclose(packed, alone, atol=1e-5)


def test_heads_backpropagate_under_bf16_autocast():
    head = build_head("mamba", C, 2)
    features = torch.randn(2, 12, C, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(padded_output(features))
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_attention_head_pools_each_sample_alone_and_weights_sum_to_one():
    """Packed and padded layouts give the same outputs; with scores that single out one token
    the pooled feature is that token's."""
    import torch

    from neuromamba.models.fmamba import BackboneOutput
    from neuromamba.models.heads import AttentionHead, attention_pool

    torch.manual_seed(0)
    feats = [torch.randn(5, 8), torch.randn(3, 8)]
    packed = BackboneOutput(torch.cat(feats)[None], torch.zeros(1, 8, 4),
                            torch.tensor([[0] * 5 + [1] * 3], dtype=torch.int32),
                            torch.tensor([5, 3]), torch.arange(8)[None], 16)
    head = AttentionHead(8, 2)
    got = head(packed)
    for i, f in enumerate(feats):
        alone = BackboneOutput(f[None], torch.zeros(1, len(f), 4), None, torch.tensor([len(f)]),
                               torch.arange(len(f))[None], 16)
        torch.testing.assert_close(got[i:i + 1], head(alone))
    scores = torch.full((1, 8), -1e4)
    scores[0, 2], scores[0, 6] = 0.0, 0.0  # token 2 of sample 0, token 1 of sample 1
    pooled = attention_pool(packed, scores)
    torch.testing.assert_close(pooled, torch.stack([feats[0][2], feats[1][1]]))


def test_a_head_is_its_class_and_its_registry_entry(monkeypatch, tmp_path):
    """A new head registered in HEADS and nothing else: --clf_head_version accepts it, the run
    builds it from the spec, its FLOPs and parameters count in check_flops' table, and its own
    check refuses a context it cannot work in."""
    from torch import nn

    from neuromamba.cli import parse_args
    from neuromamba.models.flops import FMambaFlopsConfig, count_parameters, fmamba_forward_flops
    from neuromamba.models.head_base import Head
    from neuromamba.run_settings import args_to_dict
    from neuromamba.spec import spec_from_config
    from neuromamba.training.module import NeuroMambaModule

    class MaxHead(Head):
        def __init__(self, embed_dim, num_outputs):
            super().__init__()
            self.fc = nn.Linear(embed_dim, num_outputs)

        def forward(self, out):
            return self.fc(out.features.amax(dim=1))

        @classmethod
        def check(cls, ctx):
            if ctx.num_tokens < 8:
                raise ValueError(f"the max head needs 8 tokens, got {ctx.num_tokens}")

        @classmethod
        def forward_flops(cls, ctx, seqlen):
            return seqlen * ctx.embed_dim + 2 * ctx.embed_dim * ctx.num_outputs + ctx.num_outputs

        @classmethod
        def num_parameters(cls, ctx):
            return ctx.embed_dim * ctx.num_outputs + ctx.num_outputs

    monkeypatch.setitem(HEADS, "max", MaxHead)
    tiny = ["--downstream_task", "sex", "--embed_dim", "16", "--depth", "1", "--d_state", "8",
            "--headdim", "16", "--clf_head_version", "max", "--output_dir", str(tmp_path)]
    args = parse_args(tiny + ["--img_size", "24", "24", "24", "4"])
    module = NeuroMambaModule(args_to_dict(args), num_classes=3)
    assert isinstance(module.head, MaxHead) and module.head.fc.out_features == 3
    assert "FLOPs: see" not in module.summary_line()
    cfg = FMambaFlopsConfig(embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4),
                            pretraining=False, head="max", num_outputs=3)
    assert fmamba_forward_flops(cfg, seqlen=100)["head"] == 100 * 16 + 2 * 16 * 3 + 3
    assert count_parameters(cfg) - count_parameters(FMambaFlopsConfig(
        embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4), pretraining=False,
        head="linear", num_outputs=3)) == 0  # the same parameters as the linear head
    context = spec_from_config(args_to_dict(args)).head_context(num_outputs=3)
    assert sum(p.numel() for p in module.head.parameters()) == MaxHead.num_parameters(context)
    with pytest.raises(ValueError, match=r"--clf_head_version max with --img_size 6 6 6 2 .*the max "
                                         r"head needs 8 tokens, got 1"):
        parse_args(tiny + ["--img_size", "6", "6", "6", "2"])
