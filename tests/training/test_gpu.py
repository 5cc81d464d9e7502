"""GPU-only checks (skipped without CUDA): bf16 DeepSpeed ZeRO runs end to end, their checkpoint
folders load back for fine-tuning and for --test_only."""
from pathlib import Path

import pytest
import torch

from neuromamba.checkpoints import read_state_dict
from neuromamba.cli import parse_run
from neuromamba.training.runner import run

SMALL = ["--embed_dim", "32", "--depth", "2", "--d_state", "16", "--headdim", "32", "--img_size", "24", "24", "24", "4",
         "--accelerator", "gpu", "--devices", "1", "--precision", "bf16", "--no_progress_bar",
         "--calc_loss_without_background", "--dummy_num_subjects", "10", "--batch_size", "2"]


@pytest.mark.gpu
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_pretrain_then_finetune_from_folder(tmp_path, stage):
    pre = run(parse_run(SMALL + ["--pretraining", "--strategy", f"deepspeed_stage_{stage}", "--max_epochs", "1",
                                  "--output_dir", str(tmp_path), "--run_name", "pre"]))
    last = Path(pre["run_dir"]) / "checkpoints" / "last.ckpt"
    assert last.is_dir()  # DeepSpeed writes a checkpoint folder
    state = read_state_dict(last)
    assert state["embedder.projection"].dtype == torch.float32  # consolidated fp32 master weights
    ft = run(parse_run(SMALL + ["--downstream_task", "sex", "--strategy", f"deepspeed_stage_{stage}",
                                 "--max_epochs", "1", "--load_model_path", str(last), "--clf_head_version", "mamba",
                                 "--output_dir", str(tmp_path), "--run_name", "ft"]))
    assert "test/auroc" in ft["metrics"]
    best = next((Path(ft["run_dir"]) / "checkpoints").glob("best-*"))
    again = run(parse_run(SMALL + ["--downstream_task", "sex", "--strategy", f"deepspeed_stage_{stage}",
                                    "--clf_head_version", "mamba", "--test_only", "--test_ckpt_path", str(best),
                                    "--output_dir", str(tmp_path), "--run_name", "test"]))
    assert again["metrics"]["test/acc"] == pytest.approx(ft["metrics"]["test/acc"])


@pytest.mark.gpu
def test_one_gpu_bf16_frozen_backbone_is_unchanged(tmp_path):
    """One GPU, the default strategy, bf16: the frozen backbone leaves fine-tuning bit for bit.
    (Two processes: tests/training/test_signal_and_ddp.py on CPU, the GPU suite on GPUs.)"""
    pre = run(parse_run(SMALL + ["--pretraining", "--max_epochs", "1", "--output_dir", str(tmp_path),
                                  "--run_name", "pre"]))
    ckpt = Path(pre["run_dir"]) / "checkpoints" / "last.ckpt"
    ft = run(parse_run(SMALL + ["--downstream_task", "sex", "--max_epochs", "1", "--load_model_path", str(ckpt),
                                 "--freeze_feature_extractor", "--output_dir", str(tmp_path), "--run_name", "ft"]))
    before = {k: v for k, v in read_state_dict(ckpt).items() if not k.startswith("output_layer")}
    after = ft["module"].model.state_dict()
    assert all(torch.equal(after[k].cpu(), before[k]) for k in before)
