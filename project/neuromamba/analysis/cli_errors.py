"""One-line errors for the analysis entry scripts (no traceback for bad input)."""
from __future__ import annotations

import os
import sys
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, NotADirectoryError, IsADirectoryError)


def run_cli(main: Callable[[], int]) -> int:
    """Call ``main``; turn user errors into ``error: <message>`` on stderr and exit code 2.
    Set NEUROMAMBA_DEBUG=1 to see the traceback."""
    from neuromamba.console import quiet_known_noise

    quiet_known_noise()
    try:
        return main()
    except USER_ERRORS as exc:
        if os.environ.get("NEUROMAMBA_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
