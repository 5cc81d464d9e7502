"""One writer per run folder: a second training is refused naming the holder; a dead holder's
lock is taken over with a line; the lock goes when the run ends."""
import json
import os
import socket
import subprocess
import sys

import pytest

from neuromamba.training.run_lock import RunLock


def _write_lock(folder, pid, host=None):
    (folder / ".lock").write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                              "since": "2026-12-01 10:00:00"}))


def test_a_live_holder_refuses_a_second_writer(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(tmp_path, holder.pid)
        with pytest.raises(ValueError, match=rf"in use by another training \({socket.gethostname()} "
                                             rf"pid {holder.pid}, since 2026-12-01 10:00:00\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


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
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(folder, holder.pid)
        code = main.main(["--pretraining", "--accelerator", "cpu", "--embed_dim", "16", "--depth", "1",
                          "--img_size", "24", "24", "24", "4", "--output_dir", str(tmp_path / "runs"),
                          "--run_name", "shared"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is in use by another training" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written by the refused run
