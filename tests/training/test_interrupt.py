"""Ctrl-C during training: one line with where it stopped and the exact --resume_ckpt_path."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2] / "project"


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(PROJECT / "main.py"), "--embed_dim", "16", "--depth", "1", "--d_state", "8",
           "--headdim", "16", "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--pretraining",
           "--dummy_num_subjects", "8", "--max_epochs", "1000", "--no_progress_bar", "--output_dir",
           str(tmp_path), "--run_name", "r"]
    # preexec: a shell's background job starts with SIGINT ignored (then Python installs no
    # KeyboardInterrupt handler); a terminal gives the default disposition.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last.exists()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted at epoch")]
    assert len(lines) == 1 and f"--resume_ckpt_path {last}" in lines[0], stderr[-2000:]
