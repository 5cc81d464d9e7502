"""Fixtures for the data tests."""
import pytest

from data_helpers import brain_run, save_nifti


@pytest.fixture
def nifti_folder(tmp_path):
    """Three good runs for two subjects."""
    folder = tmp_path / "nifti"
    folder.mkdir()
    save_nifti(folder / "sub-01_rest.nii.gz", brain_run(1))
    save_nifti(folder / "sub-01_task.nii.gz", brain_run(2))
    save_nifti(folder / "sub-02_rest.nii.gz", brain_run(3))
    return folder
