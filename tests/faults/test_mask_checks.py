"""A --mask is checked against the run before use: its grid and affine, binary values, and
that it covers this run's signal. A wrong mask is refused in one line naming the mask file."""
import nibabel as nib
import numpy as np
import pytest

from data_helpers import ORIGIN_MM, brain_run, save_nifti
from neuromamba.data.preprocess_runner import PreprocessOptions, preprocess_folder


def _run_with_mask(tmp_path, mask, affine_shift=(0.0, 0.0, 0.0)):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    save_nifti(folder / "s01_rest.nii.gz", brain_run(3))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = np.asarray(ORIGIN_MM) + np.asarray(affine_shift)
    nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / "mask.nii.gz"))
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4, mask=str(tmp_path / "mask.nii.gz"))
    return preprocess_folder(folder, tmp_path / "h5", opts, progress=False)


def _true_mask():
    return (brain_run(3)[..., 0] != 0).astype(np.float32)


def _failure(summary):
    assert summary.count("failed") == 1, summary.results
    message = summary.failed[0].message
    assert "mask.nii.gz" in message and "\n" not in message
    return message


def test_the_runs_own_mask_passes(tmp_path):
    assert _run_with_mask(tmp_path, _true_mask()).count("done") == 1


def test_a_mask_of_another_shape_is_refused(tmp_path):
    assert "is not the run's" in _failure(_run_with_mask(tmp_path, _true_mask()[:-2]))


def test_a_mask_with_a_shifted_affine_is_refused(tmp_path):
    assert "affine differs from the run's by up to 12" in _failure(
        _run_with_mask(tmp_path, _true_mask(), affine_shift=(12.0, 0.0, 0.0)))


def test_a_shifted_or_foreign_mask_on_the_same_grid_is_refused(tmp_path):
    shifted = np.roll(_true_mask(), 6, axis=0)  # 12 mm: another subject's anatomy, say
    assert "hold no signal" in _failure(_run_with_mask(tmp_path, shifted))


def test_a_probability_map_is_thresholded_with_a_note_and_non_binary_labels_refused(tmp_path):
    prob = np.where(_true_mask() > 0, 0.9, 0.001).astype(np.float32)
    summary = _run_with_mask(tmp_path, prob)
    assert summary.count("done") == 1
    assert any("thresholded at 0.5" in w for w in summary.results[0].warnings)
    other = tmp_path / "labels"
    other.mkdir()
    assert "not a binary mask" in _failure(_run_with_mask(other, _true_mask() * 7))
