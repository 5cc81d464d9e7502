"""FLOPs and parameters of an FMamba configuration, with and without background removal.

    python project/check_flops.py --model fmamba --embed_dim 256 --depth 12 \
        --patch_size 6 6 6 2 --img_size 96 96 96 20 --batch_size 1

Brain masks come from nilearn's MNI152 2 mm template (default, no download), a NIfTI mask
(--mask_file), or real clips of a dataset (--image_path/--dataset_name, read through the
project's data module). See neuromamba/models/flops.py for every formula.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromamba.flag_help import CommandParser, fill_missing_help, prog_for

from neuromamba.analysis.cli_errors import run_cli
from neuromamba.paper import CHUNK_SIZE


def build_parser() -> argparse.ArgumentParser:
    from neuromamba.models.heads import HEADS
    from neuromamba.analysis.flops_cli import MASK_SOURCES
    from neuromamba.data.scaling import SCALING_METHODS
    from neuromamba.spec import PAPER_DEFAULTS, recipe_names, show

    p = CommandParser(prog=prog_for("check_flops.py", "flops"), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fmamba", choices=["fmamba"])
    p.add_argument("--model_size", default=None, help="variant name (small|base|medium|large); "
                   "sets embed_dim/d_state/headdim")
    p.add_argument("--embed_dim", type=int, default=None)
    p.add_argument("--depth", type=int, default=None, help="default: the variant's, else 12")
    p.add_argument("--d_state", type=int, default=None, help="default embed_dim/4 (the variants' rule)")
    p.add_argument("--headdim", type=int, default=None, help="default embed_dim (the variants' rule)")
    p.add_argument("--chunk_size", type=int, default=CHUNK_SIZE)
    p.add_argument("--recipe", default=None,
                   help=f"named recipe ({', '.join(recipe_names())}) whose head and input are costed; "
                        "default: paper")
    p.add_argument("--patch_size", type=int, nargs=4, default=None,
                   help=f"token size (paper: {show(PAPER_DEFAULTS['patch_size'])})")
    p.add_argument("--img_size", type=int, nargs=4, default=None,
                   help=f"clip size D H W T (paper: {show(PAPER_DEFAULTS['img_size'])})")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--downstream_task", default=None,
                   help="fine-tuning cost (head instead of the 432-output layer)")
    p.add_argument("--clf_head_version", default=None, choices=list(HEADS),
                   help=f"head costed with --downstream_task (paper: {PAPER_DEFAULTS['clf_head_version']})")
    p.add_argument("--num_classes", type=int, default=2)
    # Epoch size.
    p.add_argument("--num_clips_per_epoch", type=int, default=None,
                   help="clips per epoch, for the per-epoch cost (or --dataset_size with --clips_per_subject)")
    p.add_argument("--dataset_size", type=int, default=None, help="subjects (with --clips_per_subject)")
    p.add_argument("--clips_per_subject", type=int, default=1, help="clips per subject and epoch")
    # Brain masks.
    p.add_argument("--mask", default="mni152", choices=list(MASK_SOURCES),
                   help="where brain masks come from (default: nilearn's MNI152 brain on the "
                        "grid at --voxel_size; --image_path, --hdf5_file or --mask_file use "
                        "the data's own masks)")
    p.add_argument("--voxel_size", type=float, default=2.0, metavar="MM",
                   help="voxel size of the grid for the MNI152 mask (the data's --resample_to; "
                        "4 for a 48^3 grid at 4 mm)")
    p.add_argument("--mask_file", default=None, help="NIfTI brain mask (implies --mask file)")
    p.add_argument("--hdf5_file", default=None,
                   help="a preprocessed HDF5 run: use its stored brain mask (implies --mask hdf5)")
    p.add_argument("--mask_dilation_voxels", type=int, default=0,
                   help="grow the MNI brain mask by this many voxels (a looser mask keeps more tokens)")
    p.add_argument("--jitter_voxels", type=int, default=0,
                   help="shift the batch's MNI masks by up to this many voxels (inter-subject variation)")
    p.add_argument("--dataset_name", default=None, help="with --image_path (or Dummy): masks of real clips")
    p.add_argument("--image_path", default=None, help="dataset root (implies --mask data)")
    p.add_argument("--input_scaling_method", default=None, choices=list(SCALING_METHODS),
                   help=f"with --image_path (paper: {PAPER_DEFAULTS['input_scaling_method']})")
    p.add_argument("--num_batches", type=int, default=4, help="batches of real data to average over")
    p.add_argument("--explain", action="store_true",
                   help="also print the mask-looseness sweeps that explain the original's ratio")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--verify", action="store_true",
                   help="build the model, run one forward under torch's FlopCounterMode and "
                        "compare parameters, GEMM and scan-matmul FLOPs with the analytic counts")
    return fill_missing_help(p)


def main(argv=None) -> int:
    from neuromamba.analysis import flops_cli

    args = build_parser().parse_args(argv)
    report = flops_cli.run(args)
    print(report.text)
    if args.json:
        flops_cli.write_json(args.json, report.rows)
    return 0


def run(argv=None) -> int:
    """The command as the shell runs it: user errors become one line and exit code 2."""
    return run_cli(main, argv)
