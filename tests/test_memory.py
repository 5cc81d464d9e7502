"""Memory estimates: the measured profile scales to other clip sizes, the analysis tools choose
a batch that fits (an explicit flag wins), and main.py warns or refuses before the first step."""
import pytest
import torch

from neuromamba import memory
from neuromamba.models import FMamba


def _saved_by_a_real_step(model, x):
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x.requires_grad_(True))
        out.features.float().pow(2).mean()
    return sum(seen.values())


def test_profile_from_a_probe_predicts_another_size_and_depth():
    """Measured on 512 tokens at depth 1 and 2; checked on 3 blocks and a clip of 1,440 tokens."""
    profile = memory.activation_profile(32, 3, 8, 32, (6, 6, 6, 2))
    torch.manual_seed(0)
    model = FMamba(embed_dim=32, depth=3, d_state=8, headdim=32, img_size=(36, 48, 30, 8),
                   pretraining=False)
    actual = _saved_by_a_real_step(model, torch.randn(2, 1, 36, 48, 30, 8))
    predicted = profile.per_token() * model.num_tokens * 2
    assert abs(predicted - actual) / actual < 0.1, (predicted, actual)


def test_plan_batch_fits_the_free_memory_and_the_flag_wins(monkeypatch):
    model = FMamba(embed_dim=32, depth=2, d_state=8, headdim=32, img_size=(24, 24, 24, 4),
                   pretraining=False)
    one = memory.estimate_step(memory.model_profile(model), model.num_tokens, 1,
                               sum(p.numel() for p in model.parameters()), 24**3 * 4, "input_grad")
    per_item = one.total - one.parts["weights+optimizer"]
    monkeypatch.setattr(memory, "available_memory", lambda device: (per_item * 5 / 0.8 + one.parts["weights+optimizer"] / 0.8, "test"))
    batch, line = memory.plan_batch(model, "input_grad", None, 32, "cpu", "--internal_batch_size",
                                    "integration points")
    assert batch == 5 and "5 integration points per pass (of 32; --internal_batch_size sets it)" in line
    assert "expected peak" in line
    batch, line = memory.plan_batch(model, "input_grad", 16, 32, "cpu", "--internal_batch_size")
    assert batch == 16 and "exceeds it, lower --internal_batch_size" in line
    monkeypatch.setattr(memory, "available_memory", lambda device: (1.0, "test"))
    batch, line = memory.plan_batch(model, "inference", None, 4, "cpu", "--batch_size")
    assert batch == 1 and "even one does not fit" in line


def _args(**kw):
    import argparse

    from neuromamba.cli import parse_run

    flags = ["--accelerator", "cpu", "--devices", str(kw.get("devices", 1)), "--batch_size", "8", "--pretraining"]
    run = parse_run(flags + (["--ignore_memory_estimate"] if kw.get("ignore_memory_estimate") else []))
    return run.hardware, run.trainer


def test_training_step_check_warns_then_refuses(monkeypatch):
    from neuromamba.console import NeuroMambaWarning
    from neuromamba.training import memory_check

    model = FMamba(embed_dim=32, depth=2, d_state=8, headdim=32, img_size=(24, 24, 24, 4))
    params = sum(p.numel() for p in model.parameters())
    need = memory.estimate_step(memory.model_profile(model), model.num_tokens, 8, params, 24**3 * 4).total
    monkeypatch.setattr(memory_check, "available_memory", lambda device: (need * 2, "test"))
    assert "a training step needs" in memory_check.check_step_memory(*_args(), model, params)
    monkeypatch.setattr(memory_check, "available_memory", lambda device: (need * 0.7, "test"))
    with pytest.warns(NeuroMambaWarning, match=r"--batch_size [1-4] fits; with --gradient_accumulation_steps "
                                                 r"[2-8] the effective batch stays 8"):
        memory_check.check_step_memory(*_args(), model, params)
    monkeypatch.setattr(memory_check, "available_memory", lambda device: (need * 0.3, "test"))
    with pytest.raises(ValueError, match="more than 2x what is free.*--ignore_memory_estimate"):
        memory_check.check_step_memory(*_args(), model, params)
    memory_check.check_step_memory(*_args(ignore_memory_estimate=True), model, params)
    # two CPU processes share the host: twice the memory
    assert "x 2 processes" in memory_check.check_step_memory(*_args(devices=2, ignore_memory_estimate=True),
                                                              model, params)


def test_tokens_per_clip_follows_the_stored_brain_masks():
    from neuromamba.training.memory_check import tokens_per_clip

    model = FMamba(embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4),
                   background_removal="batch")
    a = torch.zeros(24, 24, 24, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[:6, :6, :6] = True   # one spatial token each, different ones
    b[18:, 18:, 18:] = True
    dataset = [{"brain_mask": a}, {"brain_mask": b}]
    assert tokens_per_clip(model, dataset, 2) == 2 * 2  # their union, 2 time tokens each
    model.background_removal = "packed"
    assert tokens_per_clip(model, dataset, 2) == 2
    model.background_removal = "none"
    assert tokens_per_clip(model, dataset, 2) == model.num_tokens


def test_dry_run_resolves_and_writes_nothing(tmp_path, capsys):
    from neuromamba.commands.train import main

    h5 = tmp_path / "h5"
    h5.mkdir()
    rc = main(["--pretraining", "--use_autoregressive", "--calc_loss_without_background",
               "--embed_dim", "192", "--depth", "12", "--img_size", "96", "96", "96", "20",
               "--batch_size", "3", "--precision", "bf16", "--dataset_name", "S1200",
               "--image_path", str(h5), "--accelerator", "gpu", "--devices", "12", "--num_nodes", "32",
               "--strategy", "deepspeed_stage_1", "--output_dir", str(tmp_path / "runs"), "--dry_run"])
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "runs").exists()
    assert "recipe paper" in out and '"embed_dim": 192' in out and "3,082,296 backbone parameters" in out
    assert "--devices 12 --num_nodes 32 --strategy deepspeed_stage_1" in out
    assert "a training step needs" in out and "batch 3" in out


def test_the_advice_keeps_the_effective_batch_exactly():
    """It rounded the accumulation down: batch 10 with 3 fitting advised 3 x 3 = 9."""
    from neuromamba.training.memory_check import same_effective_batch

    assert same_effective_batch(10, 1, 3) == ("--batch_size 2 fits; with --gradient_accumulation_steps 5 "
                                              "the effective batch stays 10")
    assert same_effective_batch(8, 2, 5) == ("--batch_size 4 fits; with --gradient_accumulation_steps 4 "
                                             "the effective batch stays 16")
    assert same_effective_batch(7, 1, 3).startswith("--batch_size 1 fits; with --gradient_accumulation_steps 7")
