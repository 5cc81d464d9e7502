"""The work behind ``project/attribute.py``: clips of one subject (a NIfTI file or a subject of a
preprocessed dataset) -> integrated gradients -> NIfTI (original space) + PNG + JSON summary."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..fileio import atomic_write_text
from .attribution import SubjectAttribution, subject_attribution
from .attribution_io import input_affine, plot_attribution, to_input_space, write_nifti
from .encoder import load_encoder


@dataclass
class RunClips:
    """One run's clips and how to map its model grid back to the input."""

    name: str
    dataset: object  # ClipDataset
    num_frames: int
    record: object  # CropPadRecord or None

    def anatomy(self) -> np.ndarray:
        """The run's mean image before any input scaling (D, H, W) on the model grid: the
        underlay that shows the anatomy whatever the input scaling removed."""
        dataset = self.dataset
        return np.asarray(dataset.reader.voxel_stats(dataset.entries[0]).mean_image, np.float32)


def _hdf5_record(path: str):
    import h5py

    from neuromamba.data.nifti import CropPadRecord

    with h5py.File(path, "r") as f:
        text = str(f.attrs.get("crop_pad", "") or "")
    return CropPadRecord.from_json(text) if text else None


def dataset_runs(args, encoder) -> List[RunClips]:
    """The runs of ``--subject`` in a preprocessed dataset (HDF5) or the Dummy data."""
    from neuromamba.data.datasets import (ClipDataset, ClipSpec, DummyReader, HDF5Reader,
                                          discover_hdf5_runs, dummy_entries, get_dataset_info)

    spec = ClipSpec.for_model(encoder.img_size, encoder.patch_size, args.stride_within_seq,
                              args.stride_between_seq, encoder.input_scaling_method)
    if get_dataset_info(args.dataset_name).synthetic:
        from neuromamba.data import dummy

        dspec = dummy.DummySpec(num_subjects=args.dummy_num_subjects, img_size=encoder.img_size[:3],
                                num_frames=(args.dummy_num_frames
                                            or dummy.default_num_frames(encoder.clip_size[3])),
                                num_runs=args.dummy_num_runs, seed=args.seed)
        task = "regression" if encoder.task == "regression" else "classification"
        reader, entries = DummyReader(dummy.DummyGenerator(dspec, task)), dummy_entries(dspec)
    else:
        if not args.image_path:
            raise ValueError(f"--dataset_name {args.dataset_name} needs --image_path")
        from neuromamba.data.datasets import dataset_grid

        reader, entries = HDF5Reader(), discover_hdf5_runs(args.image_path)
        encoder.check_grid(dataset_grid(entries, encoder.img_size, args.dataset_name).as_dict(),
                           f"--image_path {args.image_path}")
    mine = [e for e in entries if e.subject == args.subject and (not args.run or e.run == args.run)]
    if not mine:
        known = sorted({e.subject for e in entries})
        raise ValueError(f"--subject {args.subject!r}{' --run ' + args.run if args.run else ''} "
                         f"not found; subjects are {known[:8]}{' ...' if len(known) > 8 else ''}")
    return [RunClips(f"{e.subject}_{e.run}", ClipDataset([e], spec, reader), e.num_frames,
                     _hdf5_record(e.path) if e.path else None) for e in mine]


def _batches(dataset, batch_size: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def attribution_title(name: str, class_name: str, result: SubjectAttribution) -> str:
    """What was explained, and what the model said of it."""
    said = (f"p({class_name}) = {result.output:.2f}" if result.probability_output
            else f"predicted {result.output:.3g}")
    return (f"{name}: integrated gradients for {class_name} ({said}, mean of "
            f"{result.num_clips} clip{'s' if result.num_clips != 1 else ''})")


def write_outputs(args, name: str, result: SubjectAttribution, record, class_name: str,
                  anatomy: np.ndarray) -> Dict:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    affine = input_affine(record)
    volume = to_input_space(result.volume_3d, record)
    files = {"nifti": write_nifti(str(out / f"{name}_ig.nii.gz"), volume, affine)}
    if args.four_d and result.volume_4d is not None:
        files["nifti_4d"] = write_nifti(str(out / f"{name}_ig_4d.nii.gz"),
                                        to_input_space(result.volume_4d, record), affine)
    background = to_input_space(anatomy, record, fill=0.0)
    files["png"] = plot_attribution(str(out / f"{name}_ig.png"), background, volume, affine,
                                    attribution_title(name, class_name, result))
    peak = np.unravel_index(int(np.argmax(np.abs(volume))), volume.shape)
    world = (affine @ np.array([*peak, 1.0]))[:3]
    summary = {"name": name, "target": result.target, "target_name": class_name,
               "output": result.output,
               "num_clips": result.num_clips, "reduce": args.reduce, "baseline": args.baseline,
               "completeness_error": result.completeness_error,
               # the maps show the brain only: this share of |attribution| was outside it
               "masked_to_brain": not np.isnan(result.outside_brain_share),
               "outside_brain_share_removed": None if np.isnan(result.outside_brain_share)
               else round(result.outside_brain_share, 6),
               "peak_voxel": [int(i) for i in peak], "peak_world_mm": [float(w) for w in world],
               "space": "original input" if record is not None else "model grid (no crop/pad record)",
               "files": files}
    atomic_write_text(str(out / f"{name}_ig.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def attribute_run(args, encoder, run: RunClips) -> Dict:
    from neuromamba.memory import plan_batch

    from .embed_cli import resolve_device
    from .predict import find_class_names

    device = resolve_device(args.device)
    # Integration points per pass: all n_steps at once only when they fit.
    internal, line = plan_batch(encoder.model, "input_grad", args.internal_batch_size, args.n_steps,
                                device, "--internal_batch_size", "integration points")
    print(f"[neuromamba] {line}", flush=True)
    result = subject_attribution(
        encoder, _batches(run.dataset, args.batch_size), target=args.target, n_steps=args.n_steps,
        reduce=args.reduce, num_frames=run.num_frames if args.four_d else None,
        stride_within_seq=args.stride_within_seq, internal_batch_size=internal,
        device=device, baseline=args.baseline)
    if encoder.task == "classification":
        names, _ = find_class_names(encoder.source, int(encoder.num_classes), args.class_names)
        class_name = names[result.target]
    else:
        class_name = "the regression output"
    return write_outputs(args, run.name, result, run.record, class_name, run.anatomy())


def run(args) -> List[Dict]:
    encoder = load_encoder(args.checkpoint, allow_pickle=args.allow_pickle, need_head=True)
    if args.nifti:
        from .single_run import prepared_run, run_clip_dataset

        with prepared_run(args.nifti, encoder.img_size[:3], encoder.clip_size[3],
                          resample_to=args.resample_to or encoder.voxel_size, mask=args.mask,
                          allow_crop_brain=args.allow_crop_brain) as prepared:
            encoder.check_grid(prepared.grid, f"--nifti {args.nifti}")
            dataset = run_clip_dataset(prepared, encoder.img_size, encoder.input_scaling_method,
                                       args.stride_within_seq, args.stride_between_seq, encoder.patch_size)
            name = Path(prepared.path).stem
            return [attribute_run(args, encoder, RunClips(name, dataset, prepared.num_frames,
                                                          prepared.record))]
    if not args.subject:
        raise ValueError("give --nifti FILE, or --subject ID with --dataset_name/--image_path")
    return [attribute_run(args, encoder, r) for r in dataset_runs(args, encoder)]
