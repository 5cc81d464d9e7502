"""Train, fine-tune or test NeuroMamba: ``python project/main.py --help``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neuromamba.cli import parse_args  # noqa: E402


def main(argv=None) -> int:
    from neuromamba.console import one_line_error, quiet_known_noise

    quiet_known_noise()
    try:
        args = parse_args(argv)
    except (ValueError, OSError) as error:
        print(f"main.py: error: {one_line_error(error)}", file=sys.stderr)
        return 2
    from neuromamba.training.runner import run

    try:
        run(args)
    # Bad inputs found while building the run (unknown --dataset_name, label columns, checkpoint
    # mismatches, missing files): one line, no traceback. NEUROMAMBA_DEBUG=1 shows the traceback.
    except (ValueError, OSError) as error:  # OSError: unwritable --output_dir, missing files
        if os.environ.get("NEUROMAMBA_DEBUG"):
            raise
        print(f"main.py: error: {one_line_error(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
