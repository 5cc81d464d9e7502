"""Train, fine-tune or test NeuroMamba: ``python project/main.py --help``."""
import os
import sys

from neuromamba.cli import parse_args, run_config_of


def main(argv=None) -> int:
    from neuromamba.console import one_line_error, quiet_known_noise
    from neuromamba.processes import die_with_parent, is_launched_rank

    if is_launched_rank():  # a DDP rank must not outlive the process that launched it
        die_with_parent()

    quiet_known_noise()
    try:
        args = parse_args(argv)
        run_config = run_config_of(args)
    except (ValueError, OSError) as error:
        print(f"main.py: error: {one_line_error(error)}", file=sys.stderr)
        return 2
    if args.dry_run:
        from neuromamba.training.dry_run import dry_run

        dry_run(run_config)
        return 0
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from neuromamba.training.interrupt import SIGTERM_EXIT_CODE
    from neuromamba.training.runner import run

    try:
        run(run_config)
    except SIGTERMException:  # preempted: the checkpoint and the resume line are written
        return SIGTERM_EXIT_CODE
    # Bad inputs found while building the run (unknown --dataset_name, label columns, checkpoint
    # mismatches, missing files): one line, no traceback. NEUROMAMBA_DEBUG=1 shows the traceback.
    except (ValueError, OSError) as error:  # OSError: unwritable --output_dir, missing files
        if os.environ.get("NEUROMAMBA_DEBUG"):
            raise
        print(f"main.py: error: {one_line_error(error)}", file=sys.stderr)
        return 2
    return 0


def run(argv=None) -> int:
    """The command as the shell runs it."""
    return main(argv)
