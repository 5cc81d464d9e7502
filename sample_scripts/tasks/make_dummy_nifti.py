"""Write one synthetic 4D NIfTI run (brain-shaped Dummy data on a 22x22x22 grid, 2 mm, 12
frames) for the predictor and attribution sample scripts: python make_dummy_nifti.py OUT.nii.gz"""
import sys
from pathlib import Path

import numpy as np


def main(out: str, shape=(22, 22, 22), frames: int = 12) -> None:
    import nibabel as nib

    from neuromamba.data.dummy import DummyGenerator, DummySpec

    spec = DummySpec(num_subjects=3, img_size=shape, num_frames=frames, seed=99)
    data = DummyGenerator(spec).frames("dummy0000", "run0", range(frames))  # (T, X, Y, Z)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-22.0, -22.0, -22.0]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1), affine), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python make_dummy_nifti.py OUT.nii.gz")
    main(sys.argv[1])
