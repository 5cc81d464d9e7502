"""A tiny frozen-backbone fine-tune prints no warning outside an explicit allow-list (and no
all-zero FLOPs summary): what a user sees is what matters."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2] / "project"
TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--calc_loss_without_background", "--log_every_n_steps", "1", "--dummy_num_subjects", "16",
        "--train_split", "0.5", "--val_split", "0.25", "--max_epochs", "1", "--seed", "2"]
# Lines a user may see on stderr: Lightning's own progress statements.
ALLOWED = [r"^Seed set to \d+$", r"^GPU available: ", r"^TPU available: ", r"^HPU available: ",
           r"^Loading `train_dataloader` to estimate", r"^`Trainer.fit` stopped: ",
           r"^Restoring states from the checkpoint path", r"^Loaded model weights from the checkpoint",
           r"^model: FMamba ", r"^trainable parameters: ", r"^loaded \d+ backbone tensors from ",
           r"^\[neuromamba\] "]
SUSPICIOUS = re.compile(r"warn|deprecat|tip|FLOPs\s*\|?\s*0\b|Total Flops|eval mode", re.IGNORECASE)


def _main(*argv):
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(PROJECT / "main.py"), *TINY, *argv], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_tiny_finetune_prints_no_unexpected_warning(tmp_path):
    _main("--pretraining", "--output_dir", str(tmp_path), "--run_name", "pre")
    ckpt = tmp_path / "pre" / "checkpoints" / "last.ckpt"
    proc = _main("--downstream_task", "sex", "--load_model_path", str(ckpt), "--freeze_feature_extractor",
                 "--output_dir", str(tmp_path), "--run_name", "ft")
    unexpected = [line for line in (proc.stderr + proc.stdout).splitlines()
                  if SUSPICIOUS.search(line) and not any(re.search(p, line) for p in ALLOWED)]
    assert not unexpected, "\n".join(unexpected)
    for line in proc.stderr.splitlines():
        if line.strip():
            assert any(re.search(p, line) for p in ALLOWED), f"unexpected stderr line: {line}"


def test_a_log_without_progress_bar_gets_one_line_per_epoch_with_validation_metrics(tmp_path):
    """With --no_progress_bar nothing printed between the model line and the end; Lightning's
    log_every_n_steps warning came in every short run."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    flags = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16", "--img_size", "24",
             "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar", "--dummy_num_subjects", "16",
             "--train_split", "0.5", "--val_split", "0.25", "--seed", "2", "--downstream_task", "sex",
             "--max_epochs", "2", "--output_dir", str(tmp_path), "--run_name", "r"]
    proc = subprocess.run([sys.executable, str(PROJECT / "main.py"), *flags], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[neuromamba] epoch ")]
    pattern = (r"^\[neuromamba\] epoch {}/2: train/loss \d\.\d{{4}} \| val/loss \d\.\d{{4}} "
               r"val/auroc (\d\.\d{{4}}|nan) .*\| \d+\.\d s$")
    assert len(lines) == 2 and all(re.match(pattern.format(i + 1), ln) for i, ln in enumerate(lines)), lines
    assert "(best val/loss)" in lines[0]  # the first epoch is the best so far
    assert "log_every_n_steps" not in proc.stderr + proc.stdout
