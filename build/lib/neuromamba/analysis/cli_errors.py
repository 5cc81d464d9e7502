"""One-line errors for the analysis entry scripts (no traceback for bad input)."""
from __future__ import annotations

import os
import sys
from typing import Callable

USER_ERRORS = (ValueError, OSError, KeyError)  # OSError: missing/unwritable files, disk full


def run_cli(main: Callable[..., int], argv=None) -> int:
    """Call ``main(argv)``; turn user errors into ``error: <message>`` on stderr and exit code
    2. Set NEUROMAMBA_DEBUG=1 to see the traceback."""
    from neuromamba.console import one_line_error, quiet_known_noise

    quiet_known_noise()
    try:
        return main(argv)
    except USER_ERRORS as exc:
        if os.environ.get("NEUROMAMBA_DEBUG"):
            raise
        print(f"error: {one_line_error(exc)}", file=sys.stderr)
        return 2
