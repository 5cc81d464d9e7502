"""Memory estimates against measured peaks (CPU): is what the tools print what they use?

For each model size, in a fresh process each (a process's peak resident size only grows):

* ``train``: one training step at the clip size (forward, next-token loss, backward, AdamW
  step) at all tokens. Estimate: :func:`neuromamba.memory.estimate_step`, what ``main.py``
  prints before its first step. Measured: the peak resident size minus the size before the step.
* ``attribute``: ``project/attribute.py`` with its defaults (only ``--n_steps`` lowered, which
  changes the number of passes, not their size) on one Dummy subject. Estimate: the expected
  peak it prints. Measured: the process's peak resident size.

    python benchmarks/memory_estimate.py --sizes small base --img_size 96 96 96 20

Prints a table of estimate, measured and their ratio; the README quotes it. Each Small step
at 96^3x20 takes about a minute on 2 cores, Base about two; the attribute run a few minutes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = float(2**30)


def _peak() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def child_train(size: str, img_size, batch: int) -> dict:
    import torch

    import neuromamba  # noqa: F401  (allocator tuning, as in every entry script)
    from neuromamba.memory import estimate_step, model_profile
    from neuromamba.models import FMamba

    torch.manual_seed(0)
    model = FMamba.from_variant(size, img_size=img_size, pretraining=True)
    params = sum(p.numel() for p in model.parameters())
    estimate = estimate_step(model_profile(model), model.num_tokens, batch, params, math.prod(img_size),
                             "train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, *img_size)
    before = _peak()
    started = time.time()
    loss = model.next_token_loss(model(x))
    loss.backward()
    optimizer.step()
    return {"estimate": estimate.total, "measured": _peak() - before, "seconds": time.time() - started,
            "what": f"{model.num_tokens:,} tokens x batch {batch}"}


def child_attribute(size: str, img_size, n_steps: int) -> dict:
    import contextlib
    import io

    import torch

    import neuromamba  # noqa: F401
    from neuromamba.cli import args_to_dict, parse_args
    from neuromamba.commands.attribute import main as attribute
    from neuromamba.training.module import NeuroMambaModule

    flags = ["--model_size", size, "--img_size", *map(str, img_size), "--accelerator", "cpu",
             "--downstream_task_type", "classification", "--dataset_name", "Dummy"]
    torch.manual_seed(0)
    module = NeuroMambaModule(args_to_dict(parse_args(flags)), num_classes=2)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "small.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
        del module
        printed = io.StringIO()
        started = time.time()
        with contextlib.redirect_stdout(printed):
            attribute(["--checkpoint", str(ckpt), "--dataset_name", "Dummy", "--dummy_num_subjects", "3",
                       "--dummy_num_frames", str(img_size[3]), "--subject", "dummy0000",
                       "--output_dir", str(Path(tmp) / "out"), "--n_steps", str(n_steps), "--device", "cpu"])
    line = next(t for t in printed.getvalue().splitlines() if "memory:" in t)
    value, unit = re.search(r"expected peak ~([\d.]+) (GiB|MiB)", line).groups()
    expected = float(value) * (GIB if unit == "GiB" else 2**20)
    return {"estimate": expected, "measured": _peak(), "seconds": time.time() - started,
            "what": line.split("memory: ")[1].split(",")[0]}


def _run_child(kind: str, size: str, img_size, extra: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, size, str(extra), "--img_size", *map(str, img_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "project"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{kind} {size} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["small", "base"], help="model variants")
    p.add_argument("--img_size", type=int, nargs=4, default=[96, 96, 96, 20], help="clip size")
    p.add_argument("--batch_size", type=int, default=1, help="clips per training step")
    p.add_argument("--n_steps", type=int, default=4, help="integration steps of the attribute run")
    p.add_argument("--kinds", nargs="+", default=["train", "attribute"], choices=["train", "attribute"])
    p.add_argument("--attribute_sizes", nargs="+", default=["small"], help="sizes of the attribute runs")
    p.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    img_size = tuple(args.img_size)
    if args.child:
        kind, size, extra = args.child
        result = child_train(size, img_size, int(extra)) if kind == "train" else \
            child_attribute(size, img_size, int(extra))
        print(json.dumps(result))
        return
    rows = []
    for kind in args.kinds:
        for size in (args.sizes if kind == "train" else args.attribute_sizes):
            r = _run_child(kind, size, img_size, args.batch_size if kind == "train" else args.n_steps)
            rows.append((kind, size, r))
            print(f"{kind} {size}: estimate {r['estimate'] / GIB:.2f} GiB, measured {r['measured'] / GIB:.2f} "
                  f"GiB ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    print(f"\nCPU, clip {'x'.join(map(str, img_size))}; train: one step's added peak; attribute: "
          f"the process peak (--n_steps {args.n_steps})")
    print("| work | size | what | estimate (GiB) | measured peak (GiB) | measured / estimate |")
    print("|---|---|---|---|---|---|")
    for kind, size, r in rows:
        print(f"| {kind} | {size} | {r['what']} | {r['estimate'] / GIB:.2f} | {r['measured'] / GIB:.2f} | "
              f"{r['measured'] / r['estimate']:.2f} |")


if __name__ == "__main__":
    main()
