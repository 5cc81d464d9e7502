"""The ``neuromamba`` console command: one subcommand per entry script, each the same parser.

    neuromamba train ...        (python project/main.py ...)
    neuromamba preprocess ...   (python project/preprocess.py ...)
    neuromamba predict | embed | attribute | baseline ...
    neuromamba flops ...        (python project/check_flops.py ...)
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, the original script it stands for)
COMMANDS = {
    "train": ("neuromamba.commands.train", "project/main.py: pretraining, fine-tuning, testing"),
    "preprocess": ("neuromamba.commands.preprocess", "project/preprocess.py: NIfTI/legacy -> HDF5, checks"),
    "predict": ("neuromamba.commands.predict", "project/predict.py: one NIfTI -> a prediction"),
    "embed": ("neuromamba.commands.embed", "project/embed.py: embeddings, probes, re-identification"),
    "attribute": ("neuromamba.commands.attribute", "project/attribute.py: attribution maps"),
    "baseline": ("neuromamba.commands.baseline", "project/baseline.py: classical baselines of a run"),
    "flops": ("neuromamba.commands.flops", "project/check_flops.py: FLOPs and parameters"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: neuromamba COMMAND [flags]   (neuromamba COMMAND --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"neuromamba: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.run(rest)


if __name__ == "__main__":
    sys.exit(main())
