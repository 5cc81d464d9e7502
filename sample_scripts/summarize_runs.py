"""Print mean ± std of the test metrics of several run folders (e.g. the same fine-tune with 3
seeds): ``python sample_scripts/summarize_runs.py runs/a_seed1 runs/a_seed2 runs/a_seed3``.
With ``--train RUN [RUN ...]``: peak GPU memory, median throughput and tokens kept of one run."""
import argparse
import csv
import math
import sys
from pathlib import Path


def test_metrics(run_dir: Path) -> dict:
    values = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key.startswith("test/") and value not in ("", None):
                    values[key] = float(value)  # the last test row wins
    if not values:
        raise SystemExit(f"{run_dir}/metrics.csv has no test metrics")
    return values


def train_summary(run_dir: Path) -> None:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))

    def col(key):
        return [float(r[key]) for r in rows if r.get(key) not in (None, "")]

    speeds, kept, mem = col("tok/s")[3:] or col("tok/s"), col("kept%"), col("gpu_mem_peak_gb")
    median = sorted(speeds)[len(speeds) // 2] if speeds else float("nan")
    print(f"{run_dir.name}: {len(col('train/loss_step'))} logged steps, median {median:,.0f} kept tokens/s per device, "
          f"tokens kept {sum(kept) / max(len(kept), 1):.1f}%, "
          f"peak GPU memory {f'{max(mem):.2f} GiB' if mem else 'n/a (no CUDA)'}")


def main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (each with a metrics.csv)")
    parser.add_argument("--train", action="store_true",
                        help="summarise training instead: peak GPU memory, median kept tokens/s, "
                             "tokens kept (%%) of each run")
    args = parser.parse_args(argv)
    paths = args.runs
    for p in paths:
        if not (Path(p) / "metrics.csv").is_file():
            parser.error(f"{p}: no metrics.csv (not a run folder of project/main.py)")
    if args.train:
        for p in paths:
            train_summary(Path(p))
        return
    runs = [test_metrics(Path(p)) for p in paths]
    keys = sorted(set.intersection(*(set(r) for r in runs)))
    print(f"{len(runs)} runs: " + ", ".join(Path(p).name for p in paths))
    for key in keys:
        xs = [r[key] for r in runs]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        print(f"{key:24s} {mean:.4f} ± {std:.4f}   ({', '.join(f'{x:.4f}' for x in xs)})")


if __name__ == "__main__":
    main(sys.argv[1:])
