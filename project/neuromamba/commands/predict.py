"""Predictor mode: apply a fine-tuned checkpoint to one NIfTI run.

    python project/predict.py --checkpoint runs/x/checkpoints/best.ckpt --nifti run.nii.gz [--json]

The run is preprocessed as by project/preprocess.py (in a temporary folder), cut into clips of
the checkpoint's length, and the per-clip predictions are averaged: a probability per class, or a
value in the target's original units.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuromamba.flag_help import CommandParser, fill_missing_help, prog_for

from neuromamba.analysis.cli_errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog=prog_for("predict.py", "predict"), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a fine-tuned Lightning .ckpt of this project")
    p.add_argument("--nifti", required=True, help="4D NIfTI run (MNI space, skull-stripped)")
    p.add_argument("--json", nargs="?", const="-", default=None,
                   help="print JSON instead of text (or write it to the given file)")
    p.add_argument("--class_names", nargs="*", default=None,
                   help="names of the classes in index order (default: the run's label_classes.json)")
    p.add_argument("--resample_to", "--voxel_size", dest="resample_to", type=float, default=None,
                   metavar="MM", help="voxel size of the model grid in mm, as preprocess.py's "
                                      "--resample_to (default: the checkpoint's training data's)")
    p.add_argument("--mask", default=None, metavar="FILE",
                   help="brain mask of the run (default: a BIDS *_desc-brain_mask beside it; "
                        "without one the run must be skull-stripped)")
    p.add_argument("--allow_crop_brain", action="store_true",
                   help="crop brain voxels outside the model grid instead of failing")
    p.add_argument("--stride_within_seq", type=int, default=1)
    p.add_argument("--stride_between_seq", type=float, default=1.0,
                   help="distance between clip starts in clip lengths (1: non-overlapping, 0.5: half overlap)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="clips per forward pass (default: up to 4, as many as fit in 80%% of the "
                        "device's free memory, printed at start)")
    p.add_argument("--device", default="auto")
    p.add_argument("--per_clip", action="store_true", help="include every clip's output in the JSON")
    p.add_argument("--workdir", default=None, help="keep the preprocessed HDF5 here instead of a temp dir")
    p.add_argument("--allow_pickle", action="store_true")
    return fill_missing_help(p)


def main(argv=None) -> int:
    from neuromamba.fileio import atomic_write_text
    from neuromamba.analysis.embed_cli import resolve_device
    from neuromamba.analysis.encoder import load_encoder
    from neuromamba.analysis.predict import predict_dataset, summarise
    from neuromamba.analysis.single_run import prepared_run, run_clip_dataset
    from neuromamba.memory import plan_batch

    args = build_parser().parse_args(argv)
    encoder = load_encoder(args.checkpoint, allow_pickle=args.allow_pickle, need_head=True)
    with prepared_run(args.nifti, encoder.img_size[:3], encoder.clip_size[3], args.workdir,
                      resample_to=args.resample_to or encoder.voxel_size, mask=args.mask,
                      allow_crop_brain=args.allow_crop_brain) as run:
        encoder.check_grid(run.grid, f"--nifti {args.nifti}")
        dataset = run_clip_dataset(run, encoder.img_size, encoder.input_scaling_method,
                                   args.stride_within_seq, args.stride_between_seq, encoder.patch_size,
                                   deliver="stored")
        device = resolve_device(args.device)
        batch, line = plan_batch(encoder.model, "inference", args.batch_size, 4, device, "--batch_size")
        print(f"[neuromamba] {line}", file=sys.stderr, flush=True)
        per_clip = predict_dataset(encoder, dataset, batch, device)
    prediction = summarise(encoder, per_clip, args.nifti, args.class_names, args.per_clip)
    if args.json is None:
        print(prediction.text())
    else:
        text = json.dumps(prediction.as_dict(), indent=2)
        if args.json == "-":
            print(text)
        else:
            atomic_write_text(args.json, text + "\n")
            print(prediction.text())
    return 0


def run(argv=None) -> int:
    """The command as the shell runs it: user errors become one line and exit code 2."""
    return run_cli(main, argv)
