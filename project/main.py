"""Train, fine-tune or test NeuroMamba: ``python project/main.py --help``.

The same command as ``neuromamba train`` (``neuromamba.commands.train``); this script keeps
the original's ``python project/main.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.train import main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
