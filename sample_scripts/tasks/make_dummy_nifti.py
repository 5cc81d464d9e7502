"""Write one synthetic 4D NIfTI run for the predictor and attribution sample scripts: brain-shaped
Dummy data, 2 mm voxels, placed like an MNI-registered run (the volume centred on the world
grid's centre, voxel centres on the MNI 2 mm lattice), so preprocessing keeps the whole brain.

    python make_dummy_nifti.py OUT.nii.gz [--shape 22 22 22] [--frames 12] [--seed 99]
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
    args = p.parse_args(argv)
    if not args.out.endswith((".nii", ".nii.gz")):
        p.error(f"{args.out}: the output must end in .nii or .nii.gz")
    shape = tuple(args.shape)
    spec = DummySpec(num_subjects=3, img_size=shape, num_frames=args.frames, seed=args.seed)
    data = DummyGenerator(spec).frames("dummy0000", "run0", range(args.frames))  # (T, X, Y, Z)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1), mni_placed_affine(shape)), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
