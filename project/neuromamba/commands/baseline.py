"""Classical baselines on a run's own split: the same subjects, clips and metrics as the model.

    python project/baseline.py --run_dir runs/HCP_sex_classification_E192_D12_seed1234_x

Reads the run folder's args.yaml and split file, computes per-clip features on the model's
token grid (or an atlas) from the run's clips (the same raw frames), read by default as
z-scored runs with background 0 (znorm_zeroback: both the static image and the fluctuations
kept, whatever input the model used), fits scikit-learn models on the train subjects (penalty
chosen by cross-validation grouped by subject) and evaluates the val/test subjects exactly as
the model's evaluation does. Parcel features: temporal_mean (a static difference),
temporal_std (a fluctuation amplitude), patch_stats (both), fc (coupling); voxel features with
univariate screening fitted on the training subjects (nilearn Decoder's convention):
voxel_mean, voxel_std, and fc_screened. The best feature set on validation is named (and
recorded as best_on_validation). Writes <run_dir>/baselines/<features>/predictions_{val,test}.csv,
the ROC or scatter PNG, and <run_dir>/baselines/summary.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromamba.analysis.cli_errors import run_cli
from neuromamba.flag_help import CommandParser, fill_missing_help, prog_for


def build_parser() -> argparse.ArgumentParser:
    from neuromamba.analysis.baselines import FEATURE_SETS
    from neuromamba.data.scaling import SCALING_METHODS

    p = CommandParser(prog=prog_for("baseline.py", "baseline"), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", required=True,
                   help="a classification/regression run folder of project/main.py (args.yaml, splits/)")
    p.add_argument("--features", nargs="+", choices=list(FEATURE_SETS), default=list(FEATURE_SETS),
                   help="temporal_mean / temporal_std: each parcel's temporal mean / std; "
                        "patch_stats: both; fc: Fisher-z correlations between parcels")
    p.add_argument("--input_scaling_method", default="znorm_zeroback", choices=list(SCALING_METHODS),
                   help="how the baselines read the clips (default znorm_zeroback: the static image "
                        "and the fluctuations both kept)")
    p.add_argument("--atlas", default=None, metavar="NIFTI",
                   help="a parcellation NIfTI in MNI space (integer labels) instead of the token grid")
    p.add_argument("--fc_max_parcels", type=int, default=300,
                   help="refuse connectivity over more token-grid parcels than this (use --atlas)")
    p.add_argument("--output_dir", default=None, help="default: <run_dir>/baselines")
    return fill_missing_help(p)


def main(argv=None) -> int:
    from neuromamba.analysis.baseline_cli import run

    args = build_parser().parse_args(argv)
    if args.fc_max_parcels < 2:
        raise ValueError(f"--fc_max_parcels must be >= 2, got {args.fc_max_parcels}")
    print(run(args)["text"])
    return 0


def run(argv=None) -> int:
    """The command as the shell runs it: user errors become one line and exit code 2."""
    return run_cli(main, argv)
