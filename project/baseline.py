"""Classical baselines on a run's own split: the same subjects, clips and metrics as the model.

The same command as ``neuromamba baseline`` (``neuromamba.commands.baseline``); this script keeps
the original's ``python project/baseline.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.baseline import build_parser, main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
