"""Command line of the GPU suite: flags -> settings -> sections -> results files.

Exit status: 0 when no row failed or errored (skipped rows are fine), 1 otherwise, 2 for bad
flags.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRATCH = os.path.join(tempfile.gettempdir(), "neuromamba_gpu_suite")


def _ensure_project_on_path() -> None:
    project = str(REPO_ROOT / "project")
    if project not in sys.path:
        sys.path.insert(0, project)


def _section_names() -> List[str]:
    from .sections import SECTIONS

    return list(SECTIONS)


def _int_list(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(text: str) -> tuple:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _int_list(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return value[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu_suite",
        description="NeuroMamba GPU validation: fused-kernel parity, throughput, memory, "
                    "pretrain+fine-tune and MFU, written as results.md / .csv / .json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(SCRATCH, "results"),
                   help="folder for results.md, results.csv, results.json (default: $OUT if set)")
    p.add_argument("--sections", type=_name_list, default=None,
                   help="comma list of sections to run, in the suite's order (default: all): "
                        "parity, throughput, memory, training, mfu")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="run every section on CPU with the pure path on tiny shapes (24^3 x 4, 2 blocks); "
                        "fused rows are marked skipped")
    p.add_argument("--peak_tflops", type=_positive_float, default=None,
                   help="device dense bf16 peak for MFU (default: from the device name, e.g. H100 SXM / H200 989)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work_dir", default=os.path.join(SCRATCH, "work"),
                   help="scratch folder for the training runs and their logs (outside $OUT: "
                        "checkpoints are not results)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs project/main.py")
    g = p.add_argument_group("overrides of the full/dry-run settings")
    g.add_argument("--batches", type=_int_list, default=None, help="throughput batch sizes, e.g. 1,2,3,4")
    g.add_argument("--removals", type=_name_list, default=None,
                   help="throughput background-removal rules, e.g. none,batch,packed")
    g.add_argument("--warmup", type=int, default=None, help="untimed steps before timing")
    g.add_argument("--steps", type=_positive_int, default=None, help="timed steps per measurement")
    g.add_argument("--train_steps", type=_positive_int, default=None, help="pretraining steps via main.py")
    g.add_argument("--finetune_steps", type=_positive_int, default=None, help="fine-tuning steps via main.py")
    g.add_argument("--memory_budget_gib", type=_positive_float, default=None,
                   help="pass/fail limit of the memory section (default 24)")
    p.add_argument("--time_budget_s", type=_positive_float, default=480.0,
                   help="seconds the sections may take in all: a section that would overrun it is "
                        "skipped, one that overruns its own budget (sections.BUDGETS_S) is stopped; "
                        "both are reported as skipped rows")
    p.add_argument("--quiet", action="store_true", help="do not print a line per row")
    p.add_argument("--merge", nargs="+", metavar="RESULTS_JSON", default=None,
                   help="run nothing: merge these results.json files (e.g. one per device call) "
                        "into one results.md/.csv/.json in --out")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and validate; raises ValueError with one sentence for bad values."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the results' header
    known = _section_names()
    if args.sections is None:
        args.sections = tuple(known)
    unknown = [s for s in args.sections if s not in known]
    if unknown:
        raise ValueError(f"--sections: unknown {unknown}; choose from {known}")
    args.sections = tuple(s for s in known if s in args.sections)  # the suite's order
    from neuromamba.models.embedding import BACKGROUND_REMOVALS as REMOVALS

    if args.removals is not None:
        bad = [r for r in args.removals if r not in REMOVALS]
        if bad:
            raise ValueError(f"--removals: unknown {bad}; choose from {list(REMOVALS)}")
    if args.warmup is not None and args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    return args


def settings_for(args: argparse.Namespace):
    from .settings import dry_run_settings, full_settings, with_overrides

    base = dry_run_settings() if args.dry_run else full_settings()
    return with_overrides(base, throughput_batches=args.batches, removals=args.removals,
                          warmup_steps=args.warmup, timed_steps=args.steps, train_steps=args.train_steps,
                          finetune_steps=args.finetune_steps, memory_budget_gib=args.memory_budget_gib)


def peak_for(args: argparse.Namespace, info) -> tuple:
    from .env import DRY_RUN_PEAK_TFLOPS, peak_tflops_for

    if args.peak_tflops is not None:
        return args.peak_tflops, "--peak_tflops"
    if args.dry_run:
        return DRY_RUN_PEAK_TFLOPS, "nominal, dry-run"
    value = peak_tflops_for(info.name)
    return value, (f"dense bf16 of {info.name}" if value else "unknown")


def build_context(args: argparse.Namespace, echo=print, settings=None):
    """The context the sections run in; ``settings`` (default: from the flags) lets tests shrink
    the shapes further."""
    from .context import SuiteContext
    from .env import detect_device, environment_meta
    from .results import ResultSink

    settings = settings or settings_for(args)
    info = detect_device(args.dry_run)
    peak, source = peak_for(args, info)
    meta = {"command": "gpu_suite " + " ".join(shlex.quote(a) for a in args.argv),
            "mode": settings.label, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            **environment_meta(info), "peak_bf16_tflops": f"{peak} ({source})" if peak else "unknown"}
    sink = ResultSink(args.out, meta, echo=None if args.quiet else echo)
    os.makedirs(args.work_dir, exist_ok=True)
    return SuiteContext(settings=settings, info=info, sink=sink, work_dir=args.work_dir,
                        repo_root=str(REPO_ROOT), python=args.python, seed=args.seed,
                        peak_tflops=peak, peak_source=source, dry_run=args.dry_run, log=echo)


class SectionTimeout(Exception):
    """A section ran past its budget (raised by the alarm in the main thread)."""


def estimate_lines(names: Sequence[str], time_budget_s: float) -> list:
    """The GPU wall time each section is budgeted, and the total, for the dry-run's report."""
    from .sections import BUDGETS_S

    lines = [f"estimated GPU wall time (budgets on an H100/H200): " + ", ".join(
        f"{n} {BUDGETS_S[n]} s" for n in names)]
    total = sum(BUDGETS_S[n] for n in names)
    conv = os.environ.get("NM_CONV_BUILD_S", "150")
    lines.append(f"sections {total} s of the --time_budget_s {time_budget_s:g} s; plus the "
                 f"install: carried wheels ~20 s, causal-conv1d compile up to {conv} s "
                 f"(NM_CONV_BUILD_S); sections beyond the budget are skipped in priority order")
    return lines


def run_sections(ctx, names: Sequence[str], time_budget_s: float = float("inf")) -> None:
    """Run the sections in order within the call's time budget: a section that would overrun
    it is skipped, one that overruns its own budget is stopped (SIGALRM); both leave a
    'skipped' row saying why, and the next section runs."""
    import signal

    from .env import error_text
    from .results import Row
    from .sections import BUDGETS_S, SECTIONS

    def alarm(signum, frame):
        raise SectionTimeout()

    suite_started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        for name in names:
            budget = BUDGETS_S.get(name, 60)
            left = time_budget_s - (time.perf_counter() - suite_started)
            if not ctx.dry_run and budget > left:
                ctx.sink.add(Row(section=name, case="(section)", metric="run", status="skipped",
                                 note=f"not started: its {budget} s budget exceeds the "
                                      f"{max(left, 0):.0f} s left of --time_budget_s"))
                continue
            ctx.log(f"== section {name} (budget {budget} s) ==")
            started = time.perf_counter()
            if not ctx.dry_run:
                signal.alarm(int(budget))
            try:
                SECTIONS[name](ctx)
            except SectionTimeout:
                ctx.sink.add(Row(section=name, case="(section)", metric="run", status="skipped",
                                 note=f"stopped: ran past its {budget} s budget; rows above are "
                                      f"what it measured"))
            except Exception as err:  # a bug in a runner: record it, go on with the next one
                ctx.sink.add(Row(section=name, case="(section)", metric="run", status="error",
                                 note=error_text(err, max_frames=5)))
            finally:
                signal.alarm(0)
            ctx.log(f"== section {name} done in {time.perf_counter() - started:.1f} s ==")
    finally:
        signal.signal(signal.SIGALRM, previous)


def merge(args: argparse.Namespace) -> int:
    from .results import markdown_table, merge_results

    for path in args.merge:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--merge {path}: no such file")
    rows = merge_results(args.merge, args.out)
    print(markdown_table(rows))
    print(f"merged {len(rows)} rows from {len(args.merge)} file(s) into {os.path.abspath(args.out)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    _ensure_project_on_path()
    try:
        args = parse_args(argv)
        if args.merge:
            return merge(args)
        ctx = build_context(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"gpu_suite: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for line in estimate_lines(args.sections, args.time_budget_s):
            print(line)
    run_sections(ctx, args.sections, args.time_budget_s)
    from .results import markdown_table, summary_counts

    ctx.sink.flush()
    print()
    print(markdown_table(ctx.sink.rows))
    counts = summary_counts(ctx.sink.rows)
    print(f"rows: {counts}; results in {os.path.abspath(args.out)}")
    return 1 if counts["fail"] or counts["error"] else 0
