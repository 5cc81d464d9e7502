"""The malloc tuning is applied on import (and the opt-out works), checked by where a large
block comes from, not by timing: tuned, glibc serves it from the heap, not from a new mmap."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neuromamba.allocator import malloc_tuning_wanted

PROBE = r"""
import ctypes, sys
import neuromamba

class Info(ctypes.Structure):  # struct mallinfo2 (glibc >= 2.33): size_t fields
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
grew = libc.mallinfo2().hblkhd - before
libc.free(ctypes.c_void_p(block))
print(neuromamba.MALLOC_TUNED, grew >= (64 << 20))
"""


def _probe(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES",
                                                                        "NEUROMAMBA_MALLOC"))}
    project = str(Path(__file__).resolve().parents[1] / "project")
    out = subprocess.run([sys.executable, "-c", PROBE, project], capture_output=True, text=True,
                         env={**clean, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _has_mallinfo2() -> bool:
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_import_keeps_large_blocks_off_mmap_and_opt_out_restores_it():
    tuned, mmapped = _probe()
    assert tuned == "True" and mmapped == "False"
    tuned, mmapped = _probe(NEUROMAMBA_MALLOC="system")
    assert tuned == "False" and mmapped == "True"


def test_users_own_malloc_settings_are_left_alone():
    assert malloc_tuning_wanted({})
    assert not malloc_tuning_wanted({"NEUROMAMBA_MALLOC": "system"})
    assert not malloc_tuning_wanted({"MALLOC_MMAP_MAX_": "65536"})
    assert not malloc_tuning_wanted({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
