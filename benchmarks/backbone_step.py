"""A full-size backbone training step on the CPU, as users run it: default settings.

The Small FMamba (12 blocks, C=128) at 96^3 x 20 (40,960 tokens), batch 1, forward + backward of
the next-token loss, on nilearn's MNI152 2 mm brain placed on the world grid (background at the
volume minimum, as after znorm_minback scaling). Contenders:

  * background removal ``none`` vs ``batch`` (the MNI mask keeps a fraction f of the tokens):
    the time ratio should be close to f, since every layer is linear in the tokens;
  * the project's default allocator (glibc tuned on import, neuromamba/allocator.py) vs glibc's
    own defaults (``NEUROMAMBA_MALLOC=system``).

Each round starts one fresh process per allocator (the setting is process-wide), and inside it
the two removal modes take turns, step by step; the table gives medians and ranges over all
timed steps of all rounds.

  python benchmarks/backbone_step.py --rounds 3 --steps 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1] / "project"
ALLOCATORS = {"default (tuned)": {}, "glibc defaults": {"NEUROMAMBA_MALLOC": "system"}}


def child(steps: int, variant: str, threads: int) -> dict:
    """Time ``steps`` interleaved steps of each removal mode; returns seconds per step."""
    import numpy as np
    import torch

    import neuromamba
    from neuromamba.analysis.brain_masks import mni152_voxel_mask
    from neuromamba.models import FMamba

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    mask = torch.from_numpy(mni152_voxel_mask((96, 96, 96)))
    x = torch.randn(1, 1, 96, 96, 96, 20)
    x = torch.where(mask[None, None, ..., None], x, x.min() - 1.0)
    models = {removal: FMamba.from_variant(variant, img_size=(96, 96, 96, 20), background_removal=removal)
              for removal in ("none", "batch")}
    models["batch"].load_state_dict(models["none"].state_dict())
    kept = {}

    def step(removal):
        model = models[removal]
        out = model(x)
        model.next_token_loss(out).backward()
        model.zero_grad(set_to_none=True)
        kept[removal] = int(out.lengths[0]) / out.num_tokens_total

    times = {removal: [] for removal in models}
    for removal in models:  # warm-up
        step(removal)
    for _ in range(steps):
        for removal in models:
            t0 = time.perf_counter()
            step(removal)
            times[removal].append(time.perf_counter() - t0)
    return {"times": times, "kept": kept["batch"], "tuned": neuromamba.MALLOC_TUNED,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per allocator")
    p.add_argument("--steps", type=int, default=2, help="timed steps per mode and process")
    p.add_argument("--variant", default="small")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.steps, args.variant, args.threads)))
        return

    results = {name: {"none": [], "batch": []} for name in ALLOCATORS}
    info = {}
    for _ in range(args.rounds):
        for name, extra_env in ALLOCATORS.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NEUROMAMBA_MALLOC"))}
            cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--variant", args.variant,
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, env={**env, **extra_env}, capture_output=True, text=True, check=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for removal, values in got["times"].items():
                results[name][removal] += values
            info = got
    print(f"{args.variant} FMamba, 96^3 x 20 (40,960 tokens), batch 1, forward+backward of the next-token "
          f"loss; {args.rounds} rounds x {args.steps} steps; threads={info['threads']} torch={info['torch']}")
    print(f"MNI152 brain on the world grid keeps f = {info['kept']:.3f} of the tokens\n")
    print("| allocator | removal | median s/step | range s | ratio batch/none | f |")
    print("|---|---|---|---|---|---|")
    for name in ALLOCATORS:
        none = statistics.median(results[name]["none"])
        for removal in ("none", "batch"):
            t = results[name][removal]
            ratio = f"{statistics.median(t) / none:.3f}" if removal == "batch" else ""
            frac = f"{info['kept']:.3f}" if removal == "batch" else ""
            print(f"| {name} | {removal} | {statistics.median(t):.2f} | {min(t):.2f}-{max(t):.2f} | {ratio} | {frac} |")
    base = statistics.median(results["glibc defaults"]["none"])
    tuned = statistics.median(results["default (tuned)"]["none"])
    print(f"\nglibc defaults / tuned default, no removal: {base / tuned:.2f}x")


if __name__ == "__main__":
    main()
