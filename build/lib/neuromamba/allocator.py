"""Keep freed memory in the process: glibc malloc tuned for large, short-lived tensors.

Why: a CPU training step allocates and frees the same large activation buffers again and
again. By default glibc serves every block over 128 kB to 32 MB with a fresh ``mmap`` and
returns it to the kernel on ``free`` (and trims the heap top above 128 kB), so every step pays
page faults to zero the same pages anew. On the 2-core reference machine that made a full-size
Small FMamba step 2.2x slower than with the memory kept (see README, Performance).

:func:`tune_malloc` does at start-up what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``
would do, through ``mallopt``: no mmap for ordinary blocks, and the heap trimmed only above
2 GiB of free memory at its top. It runs when ``neuromamba`` is imported (entry scripts and
notebooks alike). The price: memory freed by one step stays reserved for the next, so the
resident size is the peak, not the current, use.

Opt out with ``NEUROMAMBA_MALLOC=system`` in the environment. Malloc settings you give
yourself (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) are left alone,
and other C libraries (macOS, musl, Windows) are untouched.
"""
from __future__ import annotations

import ctypes
import os
import platform

OPT_OUT_ENV = "NEUROMAMBA_MALLOC"  # "system": keep glibc's defaults
USER_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: the largest it accepts, ~2 GiB


def malloc_tuning_wanted(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_ENV, "").strip().lower() in ("system", "0", "off", "no"):
        return False
    return not any(key in environ for key in USER_MALLOC_ENV)


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc(environ=None) -> bool:
    """Apply the settings above; True when they are in force (idempotent)."""
    if not malloc_tuning_wanted(environ):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
