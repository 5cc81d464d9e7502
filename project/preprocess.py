"""Preprocessing commands (see ADDING_YOUR_DATASET.md).

The same command as ``neuromamba preprocess`` (``neuromamba.commands.preprocess``); this script keeps
the original's ``python project/preprocess.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.preprocess import build_parser, main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
