"""A cluster job requeued by its scheduler: killed or preempted before its first checkpoint,
then started again with the same command (`--resume_ckpt_path last --run_name NAME`), often on
another node. It died again: 'not a checkpoint', then the lock its killed run left (that case,
with the other lock cases, is in test_run_lock.py)."""

import shutil

import pytest
import yaml

from neuromamba.cli import parse_args
from test_bad_input import run_command
from test_finished_runs import TINY


@pytest.mark.parametrize("folder_exists", [True, False])
def test_resume_last_without_a_checkpoint_starts_over_with_a_line(tmp_path, folder_exists):
    if folder_exists:  # what the killed job left: its settings, no checkpoint yet
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "args.yaml").write_text("seed: 1\n")
    args = parse_args(["--downstream_task", "sex", "--output_dir", str(tmp_path), "--run_name", "r",
                       "--resume_ckpt_path", "last"])
    assert args.resume_ckpt_path is None
    assert any("holds no checkpoint yet" in line and "starting the run from the beginning" in line
               for line in args.run_context.announce)


def test_resume_last_without_a_checkpoint_refuses_a_folder_of_another_experiment(tmp_path):
    """The requeue restarts its own experiment; a folder whose args.yaml records other settings
    (the run name reused for another model or task) is not silently taken over."""
    code, out = run_command("main", TINY + ["--output_dir", tmp_path, "--run_name", "r"])
    assert code == 0, out[-2000:]
    recorded = yaml.safe_load((tmp_path / "r" / "args.yaml").read_text())
    for leftover in ("checkpoints", "summary.json", "metrics.csv"):  # killed before its checkpoint
        path = tmp_path / "r" / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = (tmp_path / "r" / "args.yaml").read_bytes()

    other = [a if a != "16" else "32" for a in TINY]  # --embed_dim 32 --headdim 32
    code, out = run_command("main", other + ["--output_dir", tmp_path, "--run_name", "r",
                                             "--resume_ckpt_path", "last"])
    assert code == 2 and "was started as another experiment" in out and "model.embed_dim 16 (this command: 32)" in out
    assert "Traceback" not in out and (tmp_path / "r" / "args.yaml").read_bytes() == before

    # the same command (the real requeue) starts over there
    code, out = run_command("main", TINY + ["--output_dir", tmp_path, "--run_name", "r",
                                            "--resume_ckpt_path", "last"])
    assert code == 0, out[-2000:]
    assert yaml.safe_load((tmp_path / "r" / "args.yaml").read_text())["spec"] == recorded["spec"]
    assert (tmp_path / "r" / "summary.json").is_file()
