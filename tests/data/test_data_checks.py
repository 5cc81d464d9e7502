"""Checks made before training starts: each one line with the fix, or a warning naming what is
dropped or degenerate."""
import csv

import h5py
import numpy as np
import pytest
import torch

from data_helpers import brain_run, save_nifti
from neuromamba.data.datamodule import FMRIDataModule
from neuromamba.data.preprocess_runner import PreprocessOptions, preprocess_folder
from neuromamba.models.embedding import brain_tokens_from_voxels
from neuromamba.training.run_checks import check_checkpoint_grid, grid_mismatch


@pytest.fixture
def h5_folder(tmp_path, nifti_folder):
    out = tmp_path / "h5"
    preprocess_folder(nifti_folder, out, PreprocessOptions(target_shape=(24, 24, 24), min_frames=4),
                      progress=False)
    return out


def _dm(path, img_size=(24, 24, 24, 2), **kw):
    return FMRIDataModule(dataset_name="CSV", image_path=str(path), img_size=img_size, pretraining=True, **kw)


def test_img_size_against_the_files_grid_names_the_right_value(h5_folder):
    with pytest.raises(ValueError, match=r"--img_size 30 30 30 2 does not match .*use --img_size 24 24 24 2"):
        _dm(h5_folder, img_size=(30, 30, 30, 2)).setup()
    from neuromamba.data.datasets import dataset_grid, discover_hdf5_runs

    grid = dataset_grid(discover_hdf5_runs(h5_folder), (24, 24, 24, 2), "CSV")
    assert grid.shape == (24, 24, 24) and grid.voxel_size == (2.0, 2.0, 2.0)
    assert len(grid.affine) == 16


def test_old_format_files_are_refused_with_the_fix(h5_folder):
    with h5py.File(h5_folder / "sub-01" / "rest.h5", "a") as f:
        f.attrs["format_version"] = 1
    with pytest.raises(ValueError, match=r"sub-01/rest\.h5: .*format_version 1.*--overwrite"):
        _dm(h5_folder).setup()


def test_runs_on_different_grids_are_refused(tmp_path, nifti_folder):
    out = tmp_path / "h5"
    preprocess_folder(nifti_folder, out, PreprocessOptions(target_shape=(24, 24, 24), min_frames=4),
                      progress=False)
    other = tmp_path / "more"
    other.mkdir()
    save_nifti(other / "sub-09_rest.nii.gz", brain_run(9))
    assert preprocess_folder(other, out, PreprocessOptions(target_shape=(24, 24, 24), min_frames=4,
                                                           resample_to=3.0), progress=False).count("done") == 1
    with pytest.raises(ValueError, match=r"voxel size .* differs .*--resample_to"):
        _dm(out).setup()


def test_short_runs_and_degenerate_splits_warn(tmp_path):
    folder = tmp_path / "nifti"
    folder.mkdir()
    for i in range(6):
        save_nifti(folder / f"sub-{i:02d}_rest.nii.gz", brain_run(i, shape=(30, 34, 28, 6 if i else 3)))
    preprocess_folder(folder, tmp_path / "h5", PreprocessOptions(target_shape=(24, 24, 24), min_frames=3),
                      progress=False)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "sex"])
        for i in range(6):
            w.writerow([f"sub-{i:02d}", 0 if i < 5 else 1])
    dm = FMRIDataModule(dataset_name="CSV", image_path=str(tmp_path / "h5"), img_size=(24, 24, 24, 4),
                        label_csv=str(tmp_path / "labels.csv"), downstream_task="sex",
                        train_split=0.5, val_split=0.34, seed=1)
    # Five of six subjects are class 0: this seed's train split holds that class alone, which
    # is refused (a one-class model learns nothing); the short run was warned about first.
    with pytest.warns(UserWarning) as caught:
        with pytest.raises(ValueError, match=r"the train split holds a single class \(\{0: 2\} subjects"):
            dm.setup()
    messages = " | ".join(str(w.message) for w in caught)
    assert "shorter than one clip" in messages and "sub-00/rest.h5 (3 frames)" in messages


def test_checkpoint_on_another_grid_is_refused(tmp_path):
    grid = {"shape": [24, 24, 24], "voxel_size": [2.0, 2.0, 2.0], "affine": []}
    assert grid_mismatch(grid, dict(grid)) == ""
    assert "voxel size" in grid_mismatch(grid, {**grid, "voxel_size": [3.0, 3.0, 3.0]})
    ckpt = tmp_path / "m.ckpt"
    torch.save({"hyper_parameters": {"config": {"data_grid": {**grid, "voxel_size": [4.0] * 3}}},
                "state_dict": {}}, ckpt)
    with pytest.raises(ValueError, match=r"m\.ckpt was trained on another grid .*voxel size"):
        check_checkpoint_grid(grid, str(ckpt))
    released = tmp_path / "released.pt"
    torch.save({"embedder.projection": torch.zeros(2, 2)}, released)
    notes = check_checkpoint_grid({**grid, "voxel_size": [3.0] * 3}, str(released))
    assert notes and "pretrained on 2 mm" in notes[0]


def test_brain_tokens_from_a_voxel_mask():
    mask = torch.zeros(1, 12, 12, 12, dtype=torch.bool)
    mask[0, 7, 0, 11] = True  # one voxel: patch (1, 0, 1) of the 2x2x2 spatial grid
    tokens = brain_tokens_from_voxels(mask, (12, 12, 12, 4), (6, 6, 6, 2))
    assert tokens.shape == (1, 2 * 2 * 2 * 2)
    # token order (d, h, w, t), t fastest: patch (1, 0, 1) -> tokens 2*(4*1 + 2*0 + 1) + {0, 1}
    assert tokens[0].nonzero().flatten().tolist() == [10, 11]


def test_an_hdf5_run_holding_strings_is_refused_before_training_naming_the_file(tmp_path):
    import h5py

    from neuromamba.data.datasets import discover_hdf5_runs
    from neuromamba.data.dummy import DummySpec, write_dummy_runs

    write_dummy_runs(tmp_path / "h5", DummySpec(num_subjects=3, img_size=(24, 24, 24), num_frames=4, seed=1))
    bad = sorted((tmp_path / "h5").glob("*/*.h5"))[0]
    with h5py.File(bad, "a") as f:
        del f["fmri"]
        f.create_dataset("fmri", data=np.full((4, 24, 24, 24), "x", dtype=h5py.string_dtype()).astype(object))
    with pytest.raises(ValueError, match=rf"{bad}: ValueError: 'fmri' holds object values, not numbers"):
        discover_hdf5_runs(tmp_path / "h5")
