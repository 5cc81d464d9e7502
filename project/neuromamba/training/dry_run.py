"""``main.py --dry_run``: what a command would run, without running it.

Everything that can be known from the flags alone is resolved and printed (files and folders
the flags name must exist, as for a real run): the recipe and its
departures, the run spec, the model and its parameters, the hardware asked for, and the
memory of one training step at all tokens (an upper bound: background removal only lowers
it). No clip is read, no hardware is checked and nothing is written, so a
GPU-cluster command can be checked on a laptop (the docs' tests do this).
"""
from __future__ import annotations

import json

from neuromamba.run_settings import args_to_dict


def dry_run(args) -> list:
    """The lines a dry run prints (also returned, for tests)."""
    from neuromamba.training.memory_check import check_step_memory
    from neuromamba.spec import spec_from_config
    from neuromamba.training.module import ModuleOptions, build_backbone

    config = args_to_dict(args)
    model = build_backbone(spec_from_config(config), ModuleOptions.from_config(config))
    params = sum(p.numel() for p in model.parameters())
    lines = [f"[neuromamba] {line}" for line in args.run_context.announce]
    lines += [
        f"[neuromamba] dry run: task {args.task}"
        + (f" ({args.downstream_task_type or 'classification'} of {args.target_column or args.downstream_task})"
           if args.task != "pretraining" else ""),
        f"[neuromamba] spec: {json.dumps(args.spec, sort_keys=True)}",
        f"[neuromamba] model: FMamba C={model.embed_dim} depth={model.depth}, {params:,} backbone "
        f"parameters, {model.num_tokens:,} tokens per clip",
        f"[neuromamba] hardware: --accelerator {args.accelerator} --devices {args.devices} "
        f"--num_nodes {args.num_nodes} --strategy {args.strategy} --precision {args.precision}",
        f"[neuromamba] {check_step_memory(args, model, params, None, compare=False)} per process, "
        f"at all tokens (pure-PyTorch path: an upper bound)",
        "[neuromamba] dry run: nothing read, checked or written",
    ]
    for line in lines:
        print(line, flush=True)
    return lines
