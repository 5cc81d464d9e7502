"""Clips to analyse, in a fixed order: the project's data module, one split or all of them.

Labels are not needed here (embeddings are label-free), so the data module is built in its
unlabelled mode; probe targets are read separately (:mod:`neuromamba.analysis.label_source`).
"""
from __future__ import annotations

from torch.utils.data import ConcatDataset, DataLoader

SPLIT_CHOICES = ("all", "train", "val", "test")


def build_datamodule(args, img_size, scaling_method: str, patch_size=(6, 6, 6, 2)):
    from neuromamba.data.datamodule import FMRIDataModule

    return FMRIDataModule(
        dataset_name=args.dataset_name, image_path=args.image_path, img_size=tuple(img_size),
        stride_within_seq=args.stride_within_seq, stride_between_seq=args.stride_between_seq,
        input_scaling_method=scaling_method, patch_frames=patch_size[3], split_file=args.split_file,
        output_dir=None,
        pretraining=True, batch_size=args.batch_size, num_workers=args.num_workers,
        seed=args.seed, dummy_num_subjects=args.dummy_num_subjects,
        dummy_num_frames=args.dummy_num_frames, dummy_num_runs=args.dummy_num_runs,
        dummy_label_level=args.dummy_label_level,
    )


def clip_loader(datamodule, split: str, batch_size: int, num_workers: int = 0) -> DataLoader:
    """An unshuffled loader over one split's clips, or over all splits (train, val, test)."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"--split {split!r}: choose one of {SPLIT_CHOICES}")
    datamodule.setup("fit")
    names = ("train", "val", "test") if split == "all" else (split,)
    dataset = ConcatDataset([datamodule.datasets[n] for n in names])
    if len(dataset) == 0:
        raise ValueError(f"no clips in split {split!r}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
