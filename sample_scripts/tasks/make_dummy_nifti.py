"""Write one synthetic 4D NIfTI run for the predictor and attribution sample scripts: brain-shaped
Dummy data, 2 mm voxels, placed like an MNI-registered run (the volume centred on the world
grid's centre, voxel centres on the MNI 2 mm lattice), so preprocessing keeps the whole brain.

    python make_dummy_nifti.py OUT.nii.gz [--shape 22 22 22] [--frames 12] [--seed 99]
    python make_dummy_nifti.py BIDS_DIR --cohort 24 [--frames 24]   # a small BIDS cohort

With ``--cohort N`` it writes N subjects as a BIDS derivatives tree
(``sub-XX/func/sub-XX_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz``) and
``participants.tsv`` with each subject's planted class as ``group`` (``case``/``control``).
"""
import argparse
from pathlib import Path

import numpy as np

# World centre (mm) of the 24^3 2 mm world grid the sample scripts use (neuromamba.data.grid):
# x 22 .. -24, y -40 .. 6, z -18 .. 28.
GRID_CENTRE_MM = (-1.0, -17.0, 5.0)


def mni_placed_affine(shape, voxel_mm: float = 2.0) -> np.ndarray:
    """RAS affine whose volume centre sits at GRID_CENTRE_MM, origin on the even-mm lattice."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    for axis, (n, centre) in enumerate(zip(shape, GRID_CENTRE_MM)):
        origin = centre - voxel_mm * (n - 1) / 2
        affine[axis, 3] = voxel_mm * np.round(origin / voxel_mm)
    return affine


def main(argv=None) -> None:
    import nibabel as nib

    from neuromamba.data.dummy import DummyGenerator, DummySpec

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the NIfTI file to write (.nii or .nii.gz)")
    p.add_argument("--shape", type=int, nargs=3, default=[22, 22, 22], help="voxels (2 mm)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--cohort", type=int, default=None, metavar="N",
                   help="write N subjects as a BIDS tree into OUT (a folder) with participants.tsv")
    args = p.parse_args(argv)
    shape = tuple(args.shape)
    if args.cohort is not None:
        write_cohort(Path(args.out), args.cohort, shape, args.frames, args.seed)
        return
    if not args.out.endswith((".nii", ".nii.gz")):
        p.error(f"{args.out}: the output must end in .nii or .nii.gz")
    spec = DummySpec(num_subjects=3, img_size=shape, num_frames=args.frames, seed=args.seed)
    data = DummyGenerator(spec).frames("dummy0000", "run0", range(args.frames))  # (T, X, Y, Z)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1), mni_placed_affine(shape)), args.out)
    print(f"wrote {args.out}")


def write_cohort(root: Path, subjects: int, shape, frames: int, seed: int) -> None:
    """A BIDS derivatives tree of ``subjects`` synthetic subjects, with participants.tsv."""
    import nibabel as nib

    from neuromamba.data.dummy import DummyGenerator, DummySpec, class_labels, subject_ids

    spec = DummySpec(num_subjects=subjects, img_size=shape, num_frames=frames, seed=seed)
    generator, labels = DummyGenerator(spec), class_labels(spec)
    rows = ["participant_id\tgroup\tage"]
    for i, subject in enumerate(subject_ids(spec)):
        bids = f"sub-{i + 1:02d}"
        path = (root / bids / "func" /
                f"{bids}_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = generator.frames(subject, "run0", range(frames))  # (T, X, Y, Z)
        nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1), mni_placed_affine(shape)), str(path))
        rows.append(f"{bids}\t{('control', 'case')[labels[(subject, 'run0')]]}\t{20 + i}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    print(f"wrote {subjects} subjects and {root / 'participants.tsv'}")


if __name__ == "__main__":
    main()
