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


def dry_run(run) -> list:
    """The lines a dry run of ``run`` (a run_config.RunConfig) prints (also returned, for tests)."""
    from neuromamba.training.memory_check import check_step_memory
    from neuromamba.training.module import ModuleOptions, build_backbone

    model = build_backbone(run.spec, ModuleOptions.from_config(run.record))
    params = sum(p.numel() for p in model.parameters())
    hardware = run.hardware
    lines = [f"[neuromamba] {line}" for line in run.context.announce]
    lines += [
        f"[neuromamba] dry run: task {run.task.task}"
        + (f" ({run.task.description})" if not run.task.pretraining else ""),
        f"[neuromamba] spec: {json.dumps(run.spec.as_dict(), sort_keys=True)}",
        f"[neuromamba] model: FMamba C={model.embed_dim} depth={model.depth}, {params:,} backbone "
        f"parameters, {model.num_tokens:,} tokens per clip",
        f"[neuromamba] hardware: --accelerator {hardware.accelerator} --devices {hardware.devices} "
        f"--num_nodes {hardware.num_nodes} --strategy {hardware.strategy} --precision {hardware.precision}",
        f"[neuromamba] {check_step_memory(hardware, run.trainer, model, params, None, compare=False)} "
        f"per process, at all tokens (pure-PyTorch path: an upper bound)",
        "[neuromamba] dry run: nothing read, checked or written",
    ]
    for line in lines:
        print(line, flush=True)
    return lines
