"""Subprocesses for tests: each in its own process group, killed whole when it overruns, so no
child (a DDP rank, a DataLoader worker, a shell's children) outlives a failed test."""
import os
import signal
import subprocess

import pytest


def run_process_group(cmd, env=None, cwd=None, timeout: float = 400, merge_stderr: bool = False,
                      what: str = "") -> subprocess.CompletedProcess:
    """Run ``cmd`` to the end (or ``timeout`` s: then the whole group is killed and the test
    fails with the output's tail). ``merge_stderr``: stderr goes into stdout."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {what or ' '.join(map(str, cmd))}\n"
                    f"{(err or out or '')[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err or "")
