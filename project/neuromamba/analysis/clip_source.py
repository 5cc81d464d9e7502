"""Clips to analyse, in a fixed order: the project's data module, one split or all of them.

Labels are not needed here (embeddings are label-free), so the data module is built in its
unlabelled mode; probe targets are read separately (:mod:`neuromamba.analysis.label_source`).
"""
from __future__ import annotations

from torch.utils.data import DataLoader

from neuromamba.data.clip_buffers import ClipConcat, collate_clips

SPLIT_CHOICES = ("all", "train", "val", "test")


def build_datamodule(args, encoder):
    """The clips the encoder reads (its clip size, patch and input), with the flags' data."""
    from neuromamba.data.datamodule import DataOptions, FMRIDataModule

    spec = {"img_size": encoder.clip_size, "input_scaling_method": encoder.input_scaling_method,
            "stride_within_seq": args.stride_within_seq, "stride_between_seq": args.stride_between_seq}
    options = DataOptions.from_values(vars(args), output_dir=None, pretraining=True)
    return FMRIDataModule.from_spec(spec, encoder.patch_size[3], options)


def clip_loader(datamodule, split: str, batch_size: int, num_workers: int = 0) -> DataLoader:
    """An unshuffled loader over one split's clips, or over all splits (train, val, test), as
    the training DataLoaders deliver them (as stored: ``datasets.batch_to_model`` scales them
    on the device)."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"--split {split!r}: choose one of {SPLIT_CHOICES}")
    datamodule.setup("fit")
    names = ("train", "val", "test") if split == "all" else (split,)
    dataset = ClipConcat([part for n in names for part in datamodule.datasets[n].datasets])
    if len(dataset) == 0:
        raise ValueError(f"no clips in split {split!r}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_clips)
