"""``python benchmarks/gpu_suite ...`` or ``python -m gpu_suite ...``."""
import os
import sys

if not __package__:  # run as a folder: make the package importable by name
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gpu_suite.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    sys.exit(main())
