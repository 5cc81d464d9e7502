"""Preprocessing options: resampling, run lists, subject/run naming, dtype overrides, reruns."""
import h5py
import numpy as np
import pytest

from data_helpers import brain_run, save_nifti
from neuromamba.data.nifti import CropPadRecord, to_original_space, to_source_space
from neuromamba.data.preprocess_runner import (PreprocessOptions, discover_runs,
                                               job_from_relative_path, preprocess_folder)
from neuromamba.data.preprocess_runner import DEFAULT_SUBJECT_REGEX as REGEX
from neuromamba.data.store import choose_storage_dtype, compute_stats, fp16_max_rounding_error


def _names(rel, regex=REGEX):
    job = job_from_relative_path(rel, "x", regex)
    return job.subject, job.run


def test_subject_and_run_names():
    assert _names("sub-01_task-rest_bold.nii.gz") == ("sub-01", "task-rest_bold")
    assert _names("100206/rfMRI_REST1_LR.nii.gz") == ("100206", "rfMRI_REST1_LR")
    assert _names("subj7.nii") == ("subj7", "run0")
    custom = r"(?P<subject>\d+)_(?P<run>REST\d)"
    assert _names("x/100206_REST2.nii.gz", custom) == ("100206", "REST2")


def test_run_list_csv_and_duplicates(tmp_path):
    save_nifti(tmp_path / "a.nii.gz", brain_run(0))
    save_nifti(tmp_path / "b.nii.gz", brain_run(1))
    (tmp_path / "runs.csv").write_text("path,subject,run\na.nii.gz,S1,rest\nb.nii.gz,S1,task\n")
    jobs = discover_runs(tmp_path / "runs.csv")
    assert [(j.subject, j.run) for j in jobs] == [("S1", "rest"), ("S1", "task")]
    (tmp_path / "dup.csv").write_text("path,subject,run\na.nii.gz,S1,rest\nb.nii.gz,S1,rest\n")
    with pytest.raises(ValueError, match="both map to subject 'S1' run 'rest'"):
        discover_runs(tmp_path / "dup.csv")


def test_resampling_to_2mm_with_nilearn(tmp_path):
    data = np.zeros((20, 22, 18, 5), np.float32)
    data[4:16, 5:17, 3:15] = np.random.default_rng(0).uniform(500, 1500, (12, 12, 12, 5))
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "s1_rest.nii.gz", data, voxel=3.0)
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4, resample_to=2.0)
    summary = preprocess_folder(tmp_path / "in", tmp_path / "out", opts, progress=False)
    assert summary.count("done") == 1, summary.results[0].message
    with h5py.File(tmp_path / "out" / "s1" / "rest.h5", "r") as f:
        np.testing.assert_allclose(f.attrs["voxel_size"], [2.0, 2.0, 2.0])
        record = CropPadRecord.from_json(f.attrs["crop_pad"])
        # 3 mm -> resampled straight onto the 2 mm world grid (LAS)
        assert record.resampled and record.source_shape == (20, 22, 18)
        assert record.original_shape == (24, 24, 24) and record.shift == (0, 0, 0)
        np.testing.assert_allclose(np.diag(record.affine)[:3], [-2.0, 2.0, 2.0])
        np.testing.assert_allclose(record.target_affine, f.attrs["grid_affine"])
        mask = f["brain_mask"][()]
        source = to_source_space(mask, record, interpolation="nearest")
        assert source.shape == (20, 22, 18)
        np.testing.assert_allclose(source.affine, np.diag([3.0, 3.0, 3.0, 1.0]) +
                                   np.array([[0, 0, 0, -24], [0, 0, 0, -50], [0, 0, 0, -20],
                                             [0, 0, 0, 0]]))
        brain = np.asarray(source.dataobj) > 0  # the brain comes back where it was
        expected = np.zeros((20, 22, 18), bool)
        expected[4:16, 5:17, 3:15] = True
        assert (brain == expected).mean() > 0.97


def test_dtype_rules():
    ints = np.full((2, 4, 4, 4), 1000.0, np.float32)
    ints[0, 0, 0, 0] = 0
    stats = compute_stats(ints)
    assert choose_storage_dtype(ints, stats)[0] == np.int16
    assert choose_storage_dtype(ints, stats, "float32")[0] == np.float32
    frac = ints + 0.3
    stats = compute_stats(frac)
    with pytest.raises(ValueError, match="--storage_dtype int16"):
        choose_storage_dtype(frac, stats, "int16")
    assert fp16_max_rounding_error(1000.3) == 0.25  # spacing 0.5 in [512, 1024)
    assert fp16_max_rounding_error(37000) == 16.0  # SPEC: a step of 32 near 37,000


def test_overwrite_redoes_and_default_skips(nifti_folder, tmp_path):
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4)
    first = preprocess_folder(nifti_folder, tmp_path / "o", opts, progress=False)
    assert first.count("done") == 3
    again = preprocess_folder(nifti_folder, tmp_path / "o", opts, progress=False)
    assert again.count("skipped") == 3
    forced = preprocess_folder(nifti_folder, tmp_path / "o",
                               PreprocessOptions(target_shape=(24, 24, 24), min_frames=4,
                                                 overwrite=True), num_workers=2, progress=False)
    assert forced.count("done") == 3


def test_bids_runs_in_other_spaces_are_skipped_and_subjects_come_from_sub(tmp_path, capsys):
    from neuromamba.data.preprocess_runner import discover_runs

    func = tmp_path / "derivatives" / "fmriprep" / "sub-07" / "func"
    func.mkdir(parents=True)
    for space in ("MNI152NLin2009cAsym", "T1w"):
        save_nifti(func / f"sub-07_task-rest_space-{space}_desc-preproc_bold.nii.gz", brain_run(0))
    jobs = discover_runs(tmp_path / "derivatives")
    assert [(j.subject, j.run) for j in jobs] == [("sub-07", "task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold")]
    err = capsys.readouterr().err
    assert "SKIPPED" in err and "space-T1w" in err and "skipped 1 run(s) in other spaces than MNI152" in err
    assert len(discover_runs(tmp_path / "derivatives", space="all")) == 2
    assert [j.run for j in discover_runs(tmp_path / "derivatives", space="T1w")] == ["task-rest_space-T1w_desc-preproc_bold"]


def test_a_bids_run_in_two_matching_templates_or_without_sub_is_refused(tmp_path):
    """Both templates start with MNI152: the run was stored twice as two runs of the subject;
    a file without the sub- entity was filed under a subject called task-rest."""
    func = tmp_path / "derivatives" / "sub-07" / "func"
    func.mkdir(parents=True)
    for space in ("MNI152NLin2009cAsym", "MNI152NLin6Asym"):
        save_nifti(func / f"sub-07_task-rest_space-{space}_desc-preproc_bold.nii.gz", brain_run(0))
    with pytest.raises(ValueError, match=r"the same run in 2 spaces matching --space MNI152 "
                                         r"\(MNI152NLin2009cAsym, MNI152NLin6Asym\).*--space MNI152NLin2009cAsym"):
        discover_runs(tmp_path / "derivatives")
    jobs = discover_runs(tmp_path / "derivatives", space="MNI152NLin6Asym")
    assert [(j.subject, j.run) for j in jobs] == [("sub-07", "task-rest_space-MNI152NLin6Asym_desc-preproc_bold")]

    nosub = tmp_path / "nosub"
    nosub.mkdir()
    save_nifti(nosub / "task-rest_space-MNI152NLin6Asym_bold.nii.gz", brain_run(0))
    with pytest.raises(ValueError, match=r"task-rest_space-MNI152NLin6Asym_bold\.nii\.gz: a BIDS run "
                                         r"\(\*_bold\) without a sub- entity"):
        discover_runs(nosub)
