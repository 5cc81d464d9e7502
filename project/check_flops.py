"""FLOPs and parameters of an FMamba configuration, with and without background removal.

The same command as ``neuromamba flops`` (``neuromamba.commands.flops``); this script keeps
the original's ``python project/check_flops.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.flops import build_parser, main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
