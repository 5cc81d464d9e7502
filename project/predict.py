"""Predictor mode: apply a fine-tuned checkpoint to one NIfTI run.

The same command as ``neuromamba predict`` (``neuromamba.commands.predict``); this script keeps
the original's ``python project/predict.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.predict import build_parser, main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
