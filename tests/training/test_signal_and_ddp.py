"""Learning the Dummy data's planted signal, and DDP metrics equal to single-process metrics."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuromamba.cli import parse_args, run_config_of
from process_helpers import run_process_group
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--calc_loss_without_background"]


def test_dummy_finetune_learns_planted_signal(tmp_path):
    # 40 subjects: 20 train / 8 val / 12 test; two clips per subject
    args = parse_args(TINY + ["--downstream_task", "sex", "--dummy_num_subjects", "40", "--train_split", "0.5",
                              "--val_split", "0.2", "--batch_size", "4",
                              "--max_epochs", "5", "--learning_rate", "2e-2", "--weight_decay", "0",
                              "--seed", "3", "--output_dir", str(tmp_path),
                              "--run_name", "auc"])
    result = run(run_config_of(args))
    assert result["metrics"]["test/auroc"] >= 0.9
    with open(Path(result["run_dir"]) / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["target"] for r in rows} == {"0", "1"}
    assert all(int(r["num_clips"]) == 2 for r in rows)


def _main(tmp_path, *flags):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "project"),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "project" / "main.py"), *TINY,
           "--downstream_task", "sex", "--dummy_num_subjects", "24", "--train_split", "0.5", "--val_split", "0.2",
           "--batch_size", "3", "--eval_batch_size", "5", "--learning_rate", "1e-2", "--output_dir", str(tmp_path),
           *flags]
    # Its own process group, killed whole on timeout: no rank outlives a failed test.
    proc = run_process_group(cmd, env=env, timeout=400, what=" ".join(flags))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _children(pid: int) -> list:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_a_ddp_rank_dies_with_its_launcher(tmp_path):
    """The launching process (rank 0) killed with SIGKILL: the other rank goes within seconds
    instead of waiting in a collective until the timeout."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "project"),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "project" / "main.py"), *TINY,
           "--pretraining", "--dummy_num_subjects", "24", "--strategy", "ddp", "--devices", "2",
           "--max_epochs", "1000", "--output_dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        ranks = []
        while time.time() < deadline and not ranks:
            time.sleep(0.5)
            ranks = [c for c in _children(proc.pid)
                     if "LOCAL_RANK=1" in Path(f"/proc/{c}/environ").read_bytes().decode(errors="replace")]
        assert ranks, "rank 1 never started"
        time.sleep(3)  # let it reach the process group
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone_by = time.time() + 15
        while time.time() < gone_by and Path(f"/proc/{ranks[0]}").exists() and \
                Path(f"/proc/{ranks[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.2)
        alive = Path(f"/proc/{ranks[0]}").exists() and \
            Path(f"/proc/{ranks[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        assert not alive, "rank 1 outlived its launcher"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _test_row(run_dir):
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("test/acc")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v != ""}


@pytest.mark.slow
def test_ddp_two_processes_gives_single_process_metrics(tmp_path):
    # train + validate + test with 2 gloo processes, training with the original batch-wide
    # background rule (TINY); evaluation masks each clip on its own, so ...
    _main(tmp_path, "--strategy", "ddp", "--devices", "2", "--max_epochs", "1", "--run_name", "ddp")
    ddp_dir = tmp_path / "ddp"
    best = next((ddp_dir / "checkpoints").glob("best-*.ckpt"))
    # ... then test the same checkpoint in one process: subject-level metrics must agree exactly
    # (clips gathered from both ranks, none counted twice; 7 test subjects split unevenly)
    _main(tmp_path, "--devices", "1", "--test_only", "--test_ckpt_path", str(best), "--run_name", "single",
          "--eval_batch_size", "2")
    ddp, single = _test_row(ddp_dir), _test_row(tmp_path / "single")
    assert set(ddp) == set(single) and {"test/acc", "test/auroc", "test/balanced_acc"} <= set(ddp)
    for key in ddp:
        assert ddp[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    with open(ddp_dir / "predictions_test.csv") as f_ddp, open(tmp_path / "single" / "predictions_test.csv") as f_one:
        rows_ddp, rows_one = list(csv.DictReader(f_ddp)), list(csv.DictReader(f_one))
    assert [r["subject"] for r in rows_ddp] == [r["subject"] for r in rows_one] and len(rows_one) == 7
    for a, b in zip(rows_ddp, rows_one):
        assert a["num_clips"] == b["num_clips"] and a["predicted"] == b["predicted"]
        assert float(a["prob_class1"]) == pytest.approx(float(b["prob_class1"]), abs=1e-5)
