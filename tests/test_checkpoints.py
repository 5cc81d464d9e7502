"""Checkpoint formats: released flat dict, Lightning .ckpt, DeepSpeed folder, bare state_dict;
strict loading with readable mismatch errors; pickle refused unless asked for."""
from collections import OrderedDict

import pytest
import torch

from neuromamba.checkpoints import (
    RELEASED_PREFIX,
    CheckpointMismatchError,
    infer_backbone_config,
    load_pretrained,
    read_checkpoint,
    read_state_dict,
    save_released_format,
)
from neuromamba.models import FMamba

IMG = (12, 12, 12, 4)
CFG = dict(embed_dim=16, depth=2, d_state=8, headdim=16, img_size=IMG, patch_size=(6, 6, 6, 2))
NUM_TOKENS = 2 * 2 * 2 * 2


def released_keys(embed_dim, depth, d_state, headdim, num_tokens, conv_name="conv1d"):
    """The released layout (SPEC §5), written independently of the model: key -> shape."""
    d_inner, conv_dim = 2 * embed_dim, 2 * embed_dim + 2 * d_state
    nheads = d_inner // headdim
    keys = {"embedder.projection": (432, embed_dim), "embedder.pos": (1, num_tokens, embed_dim)}
    for i in range(depth):
        p = f"mamba_layers.{i}."
        keys.update({
            p + "0.weight": (embed_dim,),
            p + "1.dt_bias": (nheads,), p + "1.A_log": (nheads,), p + "1.D": (nheads,),
            p + "1.in_proj.weight": (2 * d_inner + 2 * d_state + nheads, embed_dim),
            p + f"1.{conv_name}.weight": (conv_dim, 1, 4), p + f"1.{conv_name}.bias": (conv_dim,),
            p + "1.norm.weight": (d_inner,), p + "1.out_proj.weight": (embed_dim, d_inner),
        })
    keys.update({"norm.weight": (embed_dim,), "output_layer.weight": (432, embed_dim), "output_layer.bias": (432,)})
    return keys


def synthetic_released(path, conv_name="conv1d", seed=7, **overrides):
    cfg = {k: CFG[k] for k in ("embed_dim", "depth", "d_state", "headdim")}
    cfg.update(overrides)
    gen = torch.Generator().manual_seed(seed)
    state = {
        RELEASED_PREFIX + k: torch.randn(shape, generator=gen) * 0.3
        for k, shape in released_keys(**cfg, num_tokens=NUM_TOKENS, conv_name=conv_name).items()
    }
    torch.save(state, path)
    return state


def clip():
    return torch.randn(2, 1, *IMG, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("conv_name", ["conv1d", "conv_xBC"])
def test_released_format_loads_strictly_and_changes_output(tmp_path, conv_name):
    path = tmp_path / "3M_E192.pt"
    written = synthetic_released(path, conv_name)
    assert len(written) == 2 + 2 * 9 + 3
    model = FMamba(**CFG).eval()
    before = model(clip()).features
    report = load_pretrained(model, path)
    assert report.format == "released" and report.dropped == [] and len(report.loaded) == len(written)
    state = model.state_dict()
    for key, value in written.items():
        key = key[len(RELEASED_PREFIX):].replace("conv_xBC", "conv1d")
        assert torch.equal(state[key], value), key
    after = model(clip()).features
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_released_layout_matches_spec_for_12_blocks(tmp_path):
    model = FMamba.from_variant("base", img_size=IMG)
    path = save_released_format(model, tmp_path / "sub" / "base.pt")
    flat = torch.load(path, weights_only=True)
    assert len(flat) == 113 and all(k.startswith(RELEASED_PREFIX) for k in flat)
    expected = released_keys(192, 12, 48, 192, NUM_TOKENS)
    assert {k[len(RELEASED_PREFIX):]: tuple(v.shape) for k, v in flat.items()} == expected
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind
    assert infer_backbone_config(read_state_dict(path)) == dict(
        embed_dim=192, depth=12, headdim=192, d_state=48, num_tokens=NUM_TOKENS, has_output_layer=True
    )


def test_round_trip_keeps_pos_buffer(tmp_path):
    source = FMamba(**CFG, pos_seed=5)
    path = save_released_format(source, tmp_path / "w.pt")
    target = FMamba(**CFG, pos_seed=0)
    assert not torch.equal(target.embedder.pos, source.embedder.pos)
    load_pretrained(target, path)
    assert torch.equal(target.embedder.pos, source.embedder.pos)  # loaded, not recomputed


def test_finetuning_model_drops_output_layer(tmp_path):
    path = tmp_path / "w.pt"
    synthetic_released(path)
    model = FMamba(**CFG, pretraining=False)
    report = load_pretrained(model, path)
    assert report.dropped == ["output_layer.bias", "output_layer.weight"]
    assert model.output_layer is None


def test_lightning_checkpoint(tmp_path):
    source = FMamba(**CFG, pos_seed=9)
    head = torch.nn.Linear(16, 2)
    ckpt = {
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "2.6.0",
        "hyper_parameters": {"embed_dim": 16, "img_size": list(IMG)},
        "state_dict": OrderedDict(
            [(f"model.{k}", v) for k, v in source.state_dict().items()]
            + [(f"head.{k}", v) for k, v in head.state_dict().items()]
        ),
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(ckpt, path)
    contents = read_checkpoint(path)
    assert contents.format == "lightning"
    assert sorted(contents.other) == ["head.bias", "head.weight"]
    model = FMamba(**CFG, pretraining=False)
    report = load_pretrained(model, path)
    assert report.ignored == ["head.bias", "head.weight"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key])

    # the same under the DeepSpeed wrapper prefix
    ckpt["state_dict"] = OrderedDict((f"_forward_module.{k}", v) for k, v in ckpt["state_dict"].items())
    torch.save(ckpt, path)
    assert set(read_state_dict(path)) == set(source.state_dict())


def test_bare_state_dict(tmp_path):
    source = FMamba(**CFG, pos_seed=2)
    path = tmp_path / "bare.pt"
    torch.save(source.state_dict(), path)
    assert read_checkpoint(path).format == "bare"
    model = FMamba(**CFG)
    load_pretrained(model, path)
    x = clip()
    assert torch.equal(model.eval()(x).features, source.eval()(x).features)


class NotATensor:
    """A pickled Python object: torch.load(weights_only=True) must refuse it."""

    def __init__(self):
        self.note = "arbitrary code could run here"


def test_pickled_object_refused_by_default(tmp_path):
    source = FMamba(**CFG)
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": source.state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match=r"pickled\.ckpt contains pickled Python objects.*--allow_pickle"):
        load_pretrained(FMamba(**CFG), path)
    report = load_pretrained(FMamba(**CFG), path, allow_pickle=True)
    assert report.format == "lightning"


def test_missing_and_corrupted_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        read_state_dict(tmp_path / "nowhere.pt")
    good = tmp_path / "good.pt"
    synthetic_released(good)
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*corrupted\.pt"):
        load_pretrained(FMamba(**CFG), corrupted)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt"):
        read_state_dict(text)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(ValueError, match="holds a list"):
        read_state_dict(not_dict)


def test_wrong_embed_dim_names_shapes(tmp_path):
    path = tmp_path / "w.pt"
    synthetic_released(path, embed_dim=24, headdim=24)
    with pytest.raises(CheckpointMismatchError) as info:
        load_pretrained(FMamba(**CFG), path)
    message = str(info.value)
    assert "embedder.projection: checkpoint (432, 24) vs model (432, 16)" in message
    assert "mamba_layers.1.1.out_proj.weight: checkpoint (24, 48) vs model (16, 32)" in message
    assert "embed_dim=24" in message and "embed_dim=16" in message
    assert isinstance(info.value, ValueError)


def test_missing_block_and_extra_key(tmp_path):
    path = tmp_path / "w.pt"
    state = synthetic_released(path)
    missing_block = {k: v for k, v in state.items() if ".mamba_layers.1." not in k}
    torch.save(missing_block, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys .*\[9\].*mamba_layers\.1\.0\.weight") as info:
        load_pretrained(FMamba(**CFG), path)
    assert "depth=1" in str(info.value) and "unexpected" not in str(info.value)

    extra = dict(state, **{RELEASED_PREFIX + "mamba_layers.2.0.weight": torch.ones(16)})
    torch.save(extra, path)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys .*mamba_layers\.2\.0\.weight \(16,\)"):
        load_pretrained(FMamba(**CFG), path)

    # strict=False is an explicit opt-in: loads what matches, reports the rest
    model = FMamba(**CFG)
    report = load_pretrained(model, path, strict=False)
    assert report.unexpected == ["mamba_layers.2.0.weight"] and report.missing == []


def test_model_with_output_layer_needs_it(tmp_path):
    path = save_released_format(FMamba(**CFG, pretraining=False), tmp_path / "finetuned.pt")
    with pytest.raises(CheckpointMismatchError, match="missing keys.*output_layer.weight"):
        load_pretrained(FMamba(**CFG), path)


def test_different_img_size_is_a_pos_shape_mismatch(tmp_path):
    path = save_released_format(FMamba(**CFG), tmp_path / "w.pt")
    with pytest.raises(CheckpointMismatchError, match=r"embedder\.pos: checkpoint \(1, 16, 16\) vs model \(1, 32, 16\)"):
        load_pretrained(FMamba(**{**CFG, "img_size": (12, 12, 24, 4)}), path)


def test_an_empty_folder_is_not_a_deepspeed_checkpoint(tmp_path):
    # Real DeepSpeed folders (ZeRO 1-3, written by DeepSpeed's engine) are read in
    # tests/training/test_deepspeed_cpu.py.
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a DeepSpeed checkpoint"):
        read_state_dict(empty, allow_pickle=True)
