"""A cluster job requeued by its scheduler: killed or preempted before its first checkpoint,
then started again with the same command (`--resume_ckpt_path last --run_name NAME`), often on
another node. It died again: 'not a checkpoint', then the lock its killed run left."""
import json
import os
import socket
import subprocess
import time

import pytest

from neuromamba.cli import parse_args
from neuromamba.training.run_lock import RunLock


@pytest.mark.parametrize("folder_exists", [True, False])
def test_resume_last_without_a_checkpoint_starts_over_with_a_line(tmp_path, folder_exists):
    if folder_exists:  # what the killed job left: its settings, no checkpoint yet
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "args.yaml").write_text("seed: 1\n")
    args = parse_args(["--downstream_task", "sex", "--output_dir", str(tmp_path), "--run_name", "r",
                       "--resume_ckpt_path", "last"])
    assert args.resume_ckpt_path is None
    assert any("holds no checkpoint yet" in line and "starting the run from the beginning" in line
               for line in args._announce)


def _lock_file(run_dir, **holder):
    run_dir.mkdir(exist_ok=True)
    (run_dir / ".lock").write_text(json.dumps(holder))


def test_the_same_job_requeued_on_another_node_takes_its_lock_over(tmp_path, monkeypatch):
    _lock_file(tmp_path, host="node-17-that-failed", pid=4242, since="2026-12-01 10:00:00", job="987654")
    monkeypatch.setenv("SLURM_JOB_ID", "987654")
    lock = RunLock(tmp_path).acquire()
    assert lock.held and "left by this scheduler job (987654) on node-17-that-failed" in lock.note
    assert json.loads((tmp_path / ".lock").read_text())["job"] == "987654"
    lock.release()
    # another job's lock on another host still cannot be checked: refused, naming the file
    _lock_file(tmp_path, host="node-17", pid=4242, since="2026-12-01 10:00:00", job="111")
    with pytest.raises(ValueError, match=r"in use by another training \(node-17 pid 4242.*remove .*\.lock"):
        RunLock(tmp_path).acquire()


def test_a_lock_naming_a_live_process_that_is_not_a_training_says_how_to_clear_it(tmp_path):
    other = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(200):  # until the child has exec'd sleep
            if open(f"/proc/{other.pid}/cmdline", "rb").read().startswith(b"sleep"):
                break
            time.sleep(0.01)
        _lock_file(tmp_path, host=socket.gethostname(), pid=other.pid, since="2026-12-01 10:00:00")
        with pytest.raises(ValueError, match=rf"pid {other.pid} now runs `sleep 30`, not a training: "
                                             rf"the lock is stale, remove .*\.lock"):
            RunLock(tmp_path).acquire()
    finally:
        other.kill()
        other.wait()
    assert os.path.exists(tmp_path / ".lock")  # refused: nothing removed
