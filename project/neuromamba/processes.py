"""Child processes that never outlive their parent.

A worker or DDP rank whose parent was killed (``kill -9``, the OOM killer, a scheduler) would
otherwise keep running: a preprocessing worker converting on its own, or a rank waiting in a
collective for a group that is gone, holding its GPU until the timeout.
"""
from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits; True when in force
    (False elsewhere). If the parent is already gone, exit now."""
    import ctypes

    parent = os.getppid()
    try:
        if ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, int(sig)) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(128 + int(sig))
    return True


def is_launched_rank(environ=None) -> bool:
    """A training process started by a launcher for another rank (Lightning's own launcher
    re-runs the command with LOCAL_RANK >= 1; torchrun and srun set it too)."""
    environ = os.environ if environ is None else environ
    return environ.get("LOCAL_RANK", "0") not in ("", "0")
