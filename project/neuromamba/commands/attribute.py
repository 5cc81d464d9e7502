"""Attribution maps (integrated gradients) of a fine-tuned model, in the input's space.

    python project/attribute.py --checkpoint runs/x/checkpoints/best.ckpt --nifti run.nii.gz \
        --output_dir attributions/ [--target 1] [--four_d]
    python project/attribute.py --checkpoint best.ckpt --dataset_name HCP --image_path /data/h5 \
        --subject 100206 --output_dir attributions/

Per run: <name>_ig.nii.gz (3D, mean over the run's clips; 4D with --four_d) on the original
input grid and affine (via the preprocessing's crop/pad record), <name>_ig.png (orthogonal
slices through the peak over the mean input volume) and <name>_ig.json (target, peak, files).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromamba.flag_help import CommandParser, fill_missing_help, prog_for

from neuromamba.analysis.cli_errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog=prog_for("attribute.py", "attribute"), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a fine-tuned Lightning .ckpt of this project")
    p.add_argument("--output_dir", required=True)
    src = p.add_argument_group("input: one NIfTI run, or one subject of a dataset")
    src.add_argument("--nifti", default=None, help="one 4D NIfTI run (MNI space), preprocessed as in training")
    src.add_argument("--resample_to", "--voxel_size", dest="resample_to", type=float, default=None,
                     metavar="MM", help="voxel size of the model grid in mm, as preprocess.py's "
                                        "--resample_to (default: the checkpoint's training data's)")
    src.add_argument("--mask", default=None, metavar="FILE",
                     help="brain mask of --nifti (default: a BIDS *_desc-brain_mask beside it)")
    src.add_argument("--allow_crop_brain", action="store_true",
                     help="crop brain voxels outside the model grid instead of failing")
    src.add_argument("--subject", default=None, help="a subject of --dataset_name/--image_path instead of --nifti")
    src.add_argument("--run", default=None, help="only this run of --subject (default: each run)")
    src.add_argument("--dataset_name", default="Dummy")
    src.add_argument("--image_path", default=None)
    src.add_argument("--seed", type=int, default=1234, help="Dummy data seed")
    src.add_argument("--dummy_num_subjects", type=int, default=40)
    src.add_argument("--dummy_num_frames", type=int, default=None)
    src.add_argument("--dummy_num_runs", type=int, default=1)
    p.add_argument("--stride_within_seq", type=int, default=1)
    p.add_argument("--stride_between_seq", type=float, default=1.0,
                   help="distance between clip starts in clip lengths (1: non-overlapping, 0.5: half overlap)")
    ig = p.add_argument_group("integrated gradients")
    ig.add_argument("--target", type=int, default=None,
                    help="class index to explain (default: the predicted class)")
    ig.add_argument("--class_names", nargs="*", default=None,
                    help="names of the classes in index order (default: the run's label_classes.json)")
    ig.add_argument("--n_steps", type=int, default=32,
                    help="integration steps of integrated gradients (Gauss-Legendre nodes)")
    ig.add_argument("--baseline", default="brain_mean", choices=["brain_mean", "background"],
                    help="IG reference input: each clip's mean brain value everywhere in the brain, "
                         "or every voxel at the background value")
    ig.add_argument("--reduce", default="abs", choices=["abs", "signed"],
                    help="per-voxel magnitude or signed attribution (summed over a clip's frames)")
    ig.add_argument("--four_d", action="store_true", help="also write the 4D map on the run's timeline")
    ig.add_argument("--internal_batch_size", type=int, default=None,
                    help="integration points per forward pass (default: as many of --n_steps as "
                         "fit in 80%% of the device's free memory, printed at start)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--allow_pickle", action="store_true")
    return fill_missing_help(p)


def main(argv=None) -> int:
    from neuromamba.analysis.attribute_cli import run

    args = build_parser().parse_args(argv)
    if args.n_steps < 1:
        raise ValueError("--n_steps must be >= 1")
    for summary in run(args):
        print(f"{summary['name']}: target {summary['target_name']}, {summary['num_clips']} clips, "
              f"peak voxel {summary['peak_voxel']} ({summary['space']})")
        for kind, path in summary["files"].items():
            print(f"  wrote {path}")
    return 0


def run(argv=None) -> int:
    """The command as the shell runs it: user errors become one line and exit code 2."""
    return run_cli(main, argv)
