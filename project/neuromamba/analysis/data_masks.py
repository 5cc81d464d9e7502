"""Brain masks from real data for the FLOPs table: an HDF5 run's stored mask, or the clips of a
dataset read through the project's data module (background = each clip's minimum under the
``*_minback`` scalings, 0 under ``*_zeroback``, exactly the model's rule)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .brain_masks import voxel_mask_from_frames
from .flops_report import MaskBatch


def mask_from_hdf5(path: str, spatial_size) -> np.ndarray:
    """The ``brain_mask`` stored with a preprocessed run (any frame non-zero), on the model grid."""
    import h5py

    if not Path(path).exists():
        raise FileNotFoundError(f"--hdf5_file {path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"--hdf5_file {path}: not a readable HDF5 file ({err})") from None
    with f:
        if "brain_mask" in f:
            mask = np.asarray(f["brain_mask"]).astype(bool)
        elif "fmri" in f:  # older files: derive it from the frames
            mask = (np.asarray(f["fmri"]) != 0).any(axis=0)
        else:
            raise ValueError(f"--hdf5_file {path}: neither 'brain_mask' nor 'fmri' in the file "
                             "(not a run written by preprocess.py)")
    if tuple(mask.shape) != tuple(spatial_size):
        raise ValueError(f"--hdf5_file {path}: mask shape {mask.shape} differs from --img_size "
                         f"{tuple(spatial_size)}")
    return mask


def masks_from_datamodule(args, cfg) -> MaskBatch:
    """Voxel masks of the first ``--num_batches`` training batches of ``--dataset_name`` /
    ``--image_path`` (unshuffled order; the clips' own background rule); the epoch size is the
    number of training clips (default clip windows)."""
    from neuromamba.data.datamodule import FMRIDataModule
    from neuromamba.data.scaling import background_value_for
    from neuromamba.spec import raw_img_size

    clip = raw_img_size(cfg.img_size, cfg.patch_size, args.input_scaling_method)  # frames read
    dm = FMRIDataModule(dataset_name=args.dataset_name or "Dummy", image_path=args.image_path,
                        img_size=clip, input_scaling_method=args.input_scaling_method,
                        patch_frames=cfg.patch_size[3],
                        pretraining=True, batch_size=args.batch_size, seed=1234)
    dm.setup("fit")
    background = background_value_for(args.input_scaling_method)
    batches: List[List[np.ndarray]] = []
    for i, batch in enumerate(dm.model_batches("train", args.batch_size)):
        if i >= args.num_batches:
            break
        batches.append([voxel_mask_from_frames(clip, None if background == "min" else 0.0)
                        for clip in batch["fmri"][:, 0].numpy()])
    if not batches:
        raise ValueError(f"--image_path {args.image_path}: no clips to build masks from")
    clips = sum(len(b) for b in batches)
    return MaskBatch(f"{args.dataset_name} data ({clips} clips)", batches[0], tuple(batches[1:]),
                     clips_per_epoch=len(dm.datasets["train"]))
