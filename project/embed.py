"""Encoder mode: export clip and subject embeddings from any checkpoint; optional linear probes

The same command as ``neuromamba embed`` (``neuromamba.commands.embed``); this script keeps
the original's ``python project/embed.py ...`` working. Run as a script, this folder is on
``sys.path``, so the package imports without being installed.
"""
import sys

from neuromamba.commands.embed import build_parser, main, run  # noqa: F401  (the script's API)

if __name__ == "__main__":
    sys.exit(run())
