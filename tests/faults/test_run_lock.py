"""One writer per run folder: a second training is refused naming the holder; a dead holder's
lock is taken over with a line; the lock goes when the run ends."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from neuromamba.training.run_lock import RunLock


def _write_lock(folder, pid, host=None, job=None):
    folder.mkdir(exist_ok=True)
    (folder / ".lock").write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                              "since": "2026-12-01 10:00:00", "job": job}))


@contextlib.contextmanager
def _live_process(command=(sys.executable, "-c", "import time; time.sleep(30)")):
    """A process that lives for the test's block (and is killed when it ends)."""
    process = subprocess.Popen(list(command))
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_live_holder_refuses_a_second_writer(tmp_path):
    with _live_process() as holder:
        _write_lock(tmp_path, holder.pid)
        with pytest.raises(ValueError, match=rf"in use by another training \({socket.gethostname()} "
                                             rf"pid {holder.pid}, since 2026-12-01 10:00:00\)"):
            RunLock(tmp_path).acquire()


def test_a_dead_holders_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)
    lock = RunLock(tmp_path).acquire()
    assert f"pid {dead.pid}" in lock.note and "no longer runs" in lock.note
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_another_hosts_lock_is_refused_with_the_file_to_remove(tmp_path):
    _write_lock(tmp_path, 12345, host="node-17")
    with pytest.raises(ValueError, match=r"node-17 pid 12345.*if that run is gone, remove .*\.lock"):
        RunLock(tmp_path).acquire()


def test_main_refuses_a_second_training_on_a_held_run_folder(tmp_path, capsys):
    import main

    folder = tmp_path / "runs" / "shared"
    folder.mkdir(parents=True)
    with _live_process() as holder:
        _write_lock(folder, holder.pid)
        code = main.main(["--pretraining", "--accelerator", "cpu", "--embed_dim", "16", "--depth", "1",
                          "--img_size", "24", "24", "24", "4", "--output_dir", str(tmp_path / "runs"),
                          "--run_name", "shared"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is in use by another training" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written by the refused run


def test_the_same_job_requeued_on_another_node_takes_its_lock_over(tmp_path, monkeypatch):
    _write_lock(tmp_path, 4242, host="node-17-that-failed", job="987654")
    monkeypatch.setenv("SLURM_JOB_ID", "987654")
    lock = RunLock(tmp_path).acquire()
    assert lock.held and "left by this scheduler job (987654) on node-17-that-failed" in lock.note
    assert json.loads((tmp_path / ".lock").read_text())["job"] == "987654"
    lock.release()
    # another job's lock on another host still cannot be checked: refused, naming the file
    _write_lock(tmp_path, 4242, host="node-17", job="111")
    with pytest.raises(ValueError, match=r"in use by another training \(node-17 pid 4242.*remove .*\.lock"):
        RunLock(tmp_path).acquire()


def test_a_lock_naming_a_live_process_that_is_not_a_training_says_how_to_clear_it(tmp_path):
    with _live_process(["sleep", "30"]) as other:
        for _ in range(200):  # until the child has exec'd sleep
            if open(f"/proc/{other.pid}/cmdline", "rb").read().startswith(b"sleep"):
                break
            time.sleep(0.01)
        _write_lock(tmp_path, other.pid)
        with pytest.raises(ValueError, match=rf"pid {other.pid} now runs `sleep 30`, not a training: "
                                             rf"the lock is stale, remove .*\.lock"):
            RunLock(tmp_path).acquire()
    assert os.path.exists(tmp_path / ".lock")  # refused: nothing removed
