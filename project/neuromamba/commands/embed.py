"""Encoder mode: export clip and subject embeddings from any checkpoint; optional linear probes
and re-identification.

    python project/embed.py --checkpoint runs/x/checkpoints/best.ckpt --dataset_name HCP \
        --image_path /data/hcp_h5 --output emb/hcp.csv \
        --label_csv labels.csv --probe_targets sex age --reid

Writes ``emb/hcp.csv`` (one row per clip: subject, run, start, emb_0..) and
``emb/hcp_subjects.csv`` (one row per subject: subject, num_clips, mean embedding). The format
follows the suffix: .csv, .npz or .parquet (needs pyarrow).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromamba.flag_help import CommandParser, fill_missing_help, prog_for

from neuromamba.analysis.cli_errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    from neuromamba.analysis.clip_source import SPLIT_CHOICES
    from neuromamba.data.dummy import LABEL_LEVELS
    from neuromamba.data.scaling import SCALING_METHODS

    p = CommandParser(prog=prog_for("embed.py", "embed"), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="Lightning .ckpt of this project, released *.pt, DeepSpeed folder or state_dict")
    p.add_argument("--allow_pickle", action="store_true", help="allow unpickling (trusted files only)")
    p.add_argument("--img_size", type=int, nargs=4, default=None,
                   help="for backbone-only checkpoints (default: the checkpoint's spec, the paper's 96 96 96 20 "
                        "for released files); .ckpt files carry it")
    p.add_argument("--patch_size", type=int, nargs=4, default=None)
    # Data (the names of project/main.py).
    p.add_argument("--dataset_name", default="Dummy")
    p.add_argument("--image_path", default=None)
    p.add_argument("--input_scaling_method", default=None, choices=list(SCALING_METHODS),
                   help="default: the checkpoint's (the paper's znorm_minback for released files)")
    p.add_argument("--stride_within_seq", type=int, default=1)
    p.add_argument("--stride_between_seq", type=float, default=1.0,
                   help="distance between clip starts in clip lengths (1: non-overlapping, 0.5: half overlap)")
    p.add_argument("--split", default="all", choices=list(SPLIT_CHOICES))
    p.add_argument("--split_file", default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batch_size", type=int, default=None,
                   help="clips per forward pass (default: up to 4, as many as fit in 80%% of the "
                        "device's free memory, printed at start)")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--dummy_num_subjects", type=int, default=40)
    p.add_argument("--dummy_num_frames", type=int, default=None)
    p.add_argument("--dummy_num_runs", type=int, default=1)
    p.add_argument("--dummy_label_level", default="subject", choices=list(LABEL_LEVELS))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    # Output.
    p.add_argument("--pooling", default="mean", choices=["mean", "last"],
                   help="token features -> clip vector")
    p.add_argument("--output", required=True, help="clip-level table (.csv | .npz | .parquet)")
    p.add_argument("--subject_output", default=None, help="default: <output>_subjects.<ext>")
    p.add_argument("--json", default=None, help="also write counts, probe and re-id results as JSON")
    # Probes.
    p.add_argument("--probe_targets", nargs="*", default=None,
                   help="label columns to probe, optionally name:classification|regression")
    p.add_argument("--label_csv", default=None)
    p.add_argument("--subject_column", default="subject")
    p.add_argument("--probe_level", default="subject", choices=["subject", "run", "clip"],
                   help="rows of the probe (run/clip for per-run labels such as task state)")
    p.add_argument("--probe_folds", type=int, default=5,
                   help="cross-validation folds of the linear probes (grouped by subject)")
    # Re-identification.
    p.add_argument("--reid", action="store_true",
                   help="re-identification across runs/sessions (needs >= 2 runs per subject)")
    p.add_argument("--reid_unit", default="run", choices=["run", "clip"],
                   help="re-identification matches mean embeddings of runs, or single clips")
    return fill_missing_help(p)


def main(argv=None) -> int:
    from neuromamba.analysis.embed_cli import run

    args = build_parser().parse_args(argv)
    print(run(args)["text"])
    return 0


def run(argv=None) -> int:
    """The command as the shell runs it: user errors become one line and exit code 2."""
    return run_cli(main, argv)
