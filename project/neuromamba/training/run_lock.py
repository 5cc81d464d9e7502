"""One writer per run folder: a training takes ``<run>/.lock`` (host and pid) for its lifetime.

A second training on the same folder is refused in one line naming the holder; a lock left by
a process that no longer runs on this host is taken over with one line saying so. The lock
records the scheduler's job id (SLURM, PBS): a job that the scheduler requeued, often onto
another node, takes over the lock its earlier run left (killed at the end of the grace period,
or its node failed). Any other lock on another host cannot be checked, so it is refused with
the file to remove once you are sure.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID")


def scheduler_job_id(environ=None):
    """This process's batch job id (SLURM or PBS), or None outside a scheduler."""
    environ = os.environ if environ is None else environ
    for name in JOB_ID_VARIABLES:
        if environ.get(name):
            return environ[name]
    return None


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False
        self.note = ""

    def acquire(self) -> "RunLock":
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "job": scheduler_job_id()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    self.note = (f"took over {self.path}: its holder (pid {holder['pid']}, since "
                                 f"{holder.get('since', '?')}) no longer runs")
                    self.path.unlink(missing_ok=True)
                    continue
                if me["job"] and holder.get("job") == me["job"]:  # this job, before its requeue
                    self.note = (f"took over {self.path}: left by this scheduler job ({me['job']}) on "
                                 f"{holder.get('host', '?')} before it was requeued")
                    self.path.unlink(missing_ok=True)
                    continue
                where = f"{holder.get('host', '?')} pid {holder.get('pid', '?')}, since {holder.get('since', '?')}"
                hint = ("" if holder.get("host") == me["host"] else
                        f"; if that run is gone, remove {self.path}")
                command = _command_of(holder["pid"]) if holder.get("host") == me["host"] and \
                    isinstance(holder.get("pid"), int) else ""
                if command and "main.py" not in command and "neuromamba" not in command:
                    hint = (f"; pid {holder['pid']} now runs `{command[:80]}`, not a training: the lock "
                            f"is stale, remove {self.path}")
                raise ValueError(f"run folder {self.path.parent} is in use by another training ({where}); "
                                 f"give another --run_name or wait for it{hint}")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ValueError(f"could not take {self.path}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held and self._holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
