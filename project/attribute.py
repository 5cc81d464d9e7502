"""Attribution maps (integrated gradients) of a fine-tuned model, in the input's space.

The same command as ``neuromamba attribute`` (``neuromamba.commands.attribute``); this script keeps
the original's ``python project/attribute.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.attribute import build_parser, main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
