"""Train, fine-tune or test NeuroMamba: ``python project/main.py --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neuromamba.cli import parse_args  # noqa: E402


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"main.py: error: {error}", file=sys.stderr)
        return 2
    from neuromamba.training.runner import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
