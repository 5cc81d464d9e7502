"""One world grid: the same MNI anatomy lands on the same token whatever the field of view or
orientation of the file; placements map back exactly; fMRIPrep-style runs with a mask file."""
import re

import h5py
import nibabel as nib
import numpy as np
import pytest

from data_helpers import brain_run, save_nifti
from neuromamba.data import grid
from neuromamba.data.nifti import CropPadRecord, to_source_array
from neuromamba.data.preprocess_runner import PreprocessOptions, preprocess_folder

FSL_2MM = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def mni_brain():
    """nilearn's MNI152 2 mm brain mask (RAS, 99x117x95) and a 3-frame run on it."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(img.dataobj) > 0
    rng = np.random.default_rng(0)
    data = np.where(mask[..., None], np.round(rng.uniform(300, 900, mask.shape + (3,))), 0)
    return data.astype(np.float32), np.asarray(img.affine, dtype=float)


def resample_exact(data, affine, target_affine, target_shape):
    """Copy an array onto another grid of the same lattice by world coordinates (test-side,
    independent of the package): every target voxel takes the source voxel at its world point."""
    idx = np.indices(target_shape).reshape(3, -1)
    world = target_affine[:3, :3] @ idx + target_affine[:3, 3:4]
    src = np.round(np.linalg.solve(affine[:3, :3], world - affine[:3, 3:4])).astype(int)
    inside = np.all((src >= 0) & (src < np.array(data.shape[:3])[:, None]), axis=0)
    out = np.zeros(tuple(target_shape) + data.shape[3:], data.dtype)
    out.reshape(-1, *data.shape[3:])[inside] = data[src[0, inside], src[1, inside], src[2, inside]]
    return out


def test_mni_brain_centre_matches_the_template():
    from nilearn.datasets import load_mni152_brain_mask

    for resolution in (1, 2):
        img = load_mni152_brain_mask(resolution=resolution)
        idx = np.argwhere(np.asarray(img.dataobj) > 0)
        centre = (idx.min(0) + idx.max(0)) / 2
        world = img.affine[:3, :3] @ centre + img.affine[:3, 3]
        np.testing.assert_allclose(world, grid.MNI152_BRAIN_CENTRE_MM, atol=1.0)


def test_grid_affine_from_the_rule_alone():
    """Independent computation: voxel centres on multiples of the voxel size, steps (-v, v, v)
    (LAS), the grid's centre the lattice point nearest the MNI brain centre (ties: the larger k)."""
    for shape, v in (((96, 96, 96), 2.0), ((24, 24, 24), 2.0), ((91, 109, 91), 2.0), ((48, 40, 44), 4.0)):
        steps = np.array([-v, v, v])
        expected = np.diag([*steps, 1.0])
        for axis in range(3):
            centre_index = (shape[axis] - 1) / 2
            candidates = np.arange(-400, 400)
            miss = np.abs(steps[axis] * candidates + steps[axis] * centre_index
                          - grid.MNI152_BRAIN_CENTRE_MM[axis])
            k = candidates[np.flatnonzero(np.isclose(miss, miss.min()))].max()
            expected[axis, 3] = steps[axis] * k
        np.testing.assert_allclose(grid.world_grid(shape, v).affine_array, expected)
    # the 96^3 2 mm grid: voxel (0,0,0) at (94, -112, -90) mm
    np.testing.assert_allclose(grid.world_grid((96, 96, 96), 2.0).affine_array[:3, 3], [94, -112, -90])


def test_same_anatomy_same_token_across_fov_and_orientation(tmp_path, mni_brain):
    """The MNI brain saved RAS on nilearn's grid, LAS on FSL's grid, and LAS on FSL's grid with
    the 4 lowest slices missing: every brain voxel lands at the same model-grid index (and the
    same world coordinate); each maps back to its own file exactly."""
    data, affine = mni_brain
    fsl = resample_exact(data, affine, FSL_2MM, (91, 109, 91))
    cut_affine = FSL_2MM.copy()
    cut_affine[2, 3] += 8.0  # starts 4 slices (8 mm) higher: the lowest slices are missing
    cut = resample_exact(data, affine, cut_affine, (91, 109, 87))
    folder = tmp_path / "in"
    folder.mkdir()
    files = {"ras": (data, affine), "fsl": (fsl, FSL_2MM), "cut": (cut, cut_affine)}
    for name, (values, aff) in files.items():
        nib.save(nib.Nifti1Image(values, aff), str(folder / f"sub-{name}_rest.nii.gz"))
    opts = PreprocessOptions(target_shape=(96, 96, 96), min_frames=3)
    summary = preprocess_folder(folder, tmp_path / "h5", opts, progress=False)
    assert summary.count("done") == 3, [r.message for r in summary.failed]

    stored = {}
    for name, (values, aff) in files.items():
        with h5py.File(tmp_path / "h5" / f"sub-{name}" / "rest.h5", "r") as f:
            record = CropPadRecord.from_json(str(f.attrs["crop_pad"]))
            frames = np.moveaxis(f["fmri"][()], 0, -1).astype(np.float32)
            stored[name] = (frames, f["brain_mask"][()].astype(bool), record)
            np.testing.assert_allclose(f.attrs["grid_affine"], grid.world_grid((96, 96, 96), 2.0).affine_array)
        assert not record.resampled and record.placement == "world"
        # every model-grid brain voxel sits at the world point its source voxel had
        model_idx = np.argwhere(stored[name][1])
        world = record.target_affine[:3, :3] @ model_idx.T + record.target_affine[:3, 3:4]
        src = np.round(np.linalg.solve(aff[:3, :3], world - aff[:3, 3:4])).astype(int).T
        np.testing.assert_array_equal(values[src[:, 0], src[:, 1], src[:, 2], 0],
                                      frames[model_idx[:, 0], model_idx[:, 1], model_idx[:, 2], 0])
        # exact round trip to the file's own array
        np.testing.assert_array_equal(to_source_array(frames, record), values)

    ras, fsl_run, cut_run = (stored[k] for k in ("ras", "fsl", "cut"))
    np.testing.assert_array_equal(ras[0], fsl_run[0])
    np.testing.assert_array_equal(ras[1], fsl_run[1])
    lost = ~cut_run[1] & ras[1]  # the brain voxels of the missing slices, and only those
    assert lost.any()
    # model z index j is at -90 + 2 j mm; the cut file starts at -64 mm
    assert np.argwhere(lost)[:, 2].max() == 12
    np.testing.assert_array_equal(cut_run[0][cut_run[1]], ras[0][cut_run[1]])
    assert not np.any(cut_run[1] & ~ras[1])


def test_misaligned_grid_is_resampled_onto_the_world_grid(tmp_path):
    """A half-voxel phase (not an integer offset) goes through nilearn onto the same grid."""
    data = brain_run(1, integer=False)
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1]) + np.array(
        [[0, 0, 0, -23.0], [0, 0, 0, -50], [0, 0, 0, -20], [0, 0, 0, 0]])), str(folder / "s_rest.nii.gz"))
    summary = preprocess_folder(folder, tmp_path / "h5", PreprocessOptions(target_shape=(24, 24, 24),
                                                                           min_frames=4), progress=False)
    assert summary.count("done") == 1, summary.results[0].message
    with h5py.File(tmp_path / "h5" / "s" / "rest.h5", "r") as f:
        record = CropPadRecord.from_json(str(f.attrs["crop_pad"]))
        assert record.resampled
        np.testing.assert_allclose(record.target_affine, grid.world_grid((24, 24, 24), 2.0).affine_array)


@pytest.mark.parametrize("case, message", [
    ("far", "does not look registered to MNI space"),
    ("aniso", "anisotropic voxels"),
    ("big", "% of the brain) fall outside"),
])
def test_runs_that_cannot_be_placed_are_refused(tmp_path, case, message):
    folder = tmp_path / "in"
    folder.mkdir()
    data, affine = brain_run(1), np.diag([2.0, 2, 2, 1])
    affine[:3, 3] = (-24.0, -50.0, -20.0)
    target = (24, 24, 24)
    if case == "far":
        affine[:3, 3] += (80.0, 0, 0)
    elif case == "aniso":
        affine[2, 2] = 4.0
    else:
        target = (12, 12, 12)
    nib.save(nib.Nifti1Image(data, affine), str(folder / "s_rest.nii.gz"))
    summary = preprocess_folder(folder, tmp_path / "h5", PreprocessOptions(target_shape=target, min_frames=4),
                                progress=False)
    assert summary.count("failed") == 1 and message in summary.failed[0].message
    assert "s_rest.nii.gz" in summary.failed[0].message


def test_brain_centre_placement_is_explicit_and_recorded(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "s_rest.nii.gz", brain_run(1))
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4, placement="brain_centre")
    assert preprocess_folder(folder, tmp_path / "h5", opts, progress=False).count("done") == 1
    with h5py.File(tmp_path / "h5" / "s" / "rest.h5", "r") as f:
        assert f.attrs["placement"] == "brain_centre"
        assert CropPadRecord.from_json(str(f.attrs["crop_pad"])).placement == "brain_centre"


def test_small_brain_in_a_large_grid_warns(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "s_rest.nii.gz", brain_run(1), voxel=2.0)
    summary = preprocess_folder(folder, tmp_path / "h5", PreprocessOptions(target_shape=(48, 48, 48),
                                                                           min_frames=4), progress=False)
    assert summary.count("done") == 1
    assert any("mostly padding" in w for w in summary.results[0].warnings)


def test_rerun_with_other_settings_is_refused(tmp_path, nifti_folder):
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4)
    assert preprocess_folder(nifti_folder, tmp_path / "h5", opts, progress=False).count("done") == 3
    assert preprocess_folder(nifti_folder, tmp_path / "h5", opts, progress=False).count("skipped") == 3
    other = PreprocessOptions(target_shape=(30, 30, 30), min_frames=4)
    summary = preprocess_folder(nifti_folder, tmp_path / "h5", other, progress=False)
    assert summary.count("failed") == 3
    assert "--target_shape [24, 24, 24] -> [30, 30, 30]" in summary.failed[0].message
    assert "--overwrite" in summary.failed[0].message
    redo = PreprocessOptions(target_shape=(30, 30, 30), min_frames=4, overwrite=True)
    assert preprocess_folder(nifti_folder, tmp_path / "h5", redo, progress=False).count("done") == 3


# ---------------------------------------------------------------------------------------------
# fMRIPrep-style runs: non-zero background, the brain mask beside the BOLD file
# ---------------------------------------------------------------------------------------------
BIDS_BOLD = "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
BIDS_MASK = "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"


def _fmriprep_like():
    rng = np.random.default_rng(4)
    brain = brain_run(5) != 0
    head = np.round(rng.uniform(20, 80, brain.shape)).astype(np.float32)  # skull/air, not zero
    data = np.where(brain, brain_run(5), head)
    return data, brain[..., 0]


def test_fmriprep_run_with_its_mask_equals_the_hand_stripped_run(tmp_path):
    data, mask = _fmriprep_like()
    bids = tmp_path / "derivatives" / "sub-01" / "func"
    bids.mkdir(parents=True)
    save_nifti(bids / BIDS_BOLD, data)
    save_nifti(bids / BIDS_MASK, mask.astype(np.uint8))
    stripped = tmp_path / "stripped" / "sub-01"
    stripped.mkdir(parents=True)
    save_nifti(stripped / "task-rest_bold.nii.gz", data * mask[..., None])
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4)
    a = preprocess_folder(tmp_path / "derivatives", tmp_path / "h5a", opts, progress=False)
    b = preprocess_folder(tmp_path / "stripped", tmp_path / "h5b", opts, progress=False)
    assert a.count("done") == 1 and len(a.results) == 1, a.results  # the mask is not a run
    assert b.count("done") == 1
    with h5py.File(a.results[0].path, "r") as fa, h5py.File(b.results[0].path, "r") as fb:
        np.testing.assert_array_equal(fa["brain_mask"][()], fb["brain_mask"][()])
        np.testing.assert_array_equal(fa["fmri"][()], fb["fmri"][()])
        for key in ("stats_valid_voxels", "stats_mean", "stats_std", "stats_min", "stats_max"):
            assert fa.attrs[key] == fb.attrs[key], key
        assert fa.attrs["mask_file"].endswith(BIDS_MASK)
        assert int(fa["brain_mask"][()].sum()) == int(mask.sum())


def test_fmriprep_run_without_a_mask_is_flagged_and_mask_flag_fixes_it(tmp_path):
    data, mask = _fmriprep_like()
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / BIDS_BOLD, data)
    opts = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4)
    summary = preprocess_folder(folder, tmp_path / "h5", opts, progress=False)
    assert summary.count("failed") == 1
    assert "background is not zero" in summary.failed[0].message and BIDS_BOLD in summary.failed[0].message
    save_nifti(tmp_path / "mask.nii.gz", mask.astype(np.uint8))
    with_mask = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4, mask=str(tmp_path / "mask.nii.gz"))
    assert preprocess_folder(folder, tmp_path / "h5m", with_mask, progress=False).count("done") == 1


def test_signed_brain_values_warn(tmp_path):
    data = brain_run(1) - 1000.0  # demeaned: brain values on both sides of 0
    data[brain_run(1) == 0] = 0
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "s_rest.nii.gz", data)
    summary = preprocess_folder(folder, tmp_path / "h5", PreprocessOptions(target_shape=(24, 24, 24),
                                                                           min_frames=4), progress=False)
    assert summary.count("done") == 1
    assert any("below the background's raw value" in w for w in summary.results[0].warnings)


@pytest.mark.parametrize("resample_to, allowed", [(2.0, False), (2.0, True), (0.5, False)])
def test_resampled_runs_get_the_crop_check_too(tmp_path, resample_to, allowed):
    """2x2x4 mm voxels resampled to 2 mm onto a grid smaller than the brain: the brain cut off by
    the resampling is counted on the input's own voxels and refused (or cut when allowed); 0.5 mm
    puts a 12 mm cube over the brain, refused the same way."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = np.zeros((30, 30, 16, 4), np.float32)
    data[3:27, 3:27, 2:14] = 500 + np.random.default_rng(0).normal(size=(24, 24, 12, 4))  # 48 mm cube
    affine = np.diag([2.0, 2, 4, 1])
    affine[:3, 3] = (-30.0, -48.0, -14.0)  # its centre near the MNI brain's
    nib.save(nib.Nifti1Image(data, affine), str(folder / "s_rest.nii.gz"))
    opts = PreprocessOptions(target_shape=(24, 24, 24) if resample_to == 0.5 else (20, 20, 20), min_frames=4,
                             resample_to=resample_to, allow_crop_brain=allowed)
    summary = preprocess_folder(folder, tmp_path / "h5", opts, progress=False)
    if allowed:
        assert summary.count("done") == 1, summary.results[0].message
        return
    assert summary.count("failed") == 1
    message = summary.failed[0].message
    assert "s_rest.nii.gz" in message and "% of the brain) fall outside" in message
    share = float(re.search(r"\(([\d.]+)% of the brain\)", message).group(1))
    assert share > (50 if resample_to == 0.5 else 10)


def test_registration_is_checked_by_overlap_with_the_mni_brain(mni_brain):
    """The MNI brain itself overlaps at Dice ~1; rotated 15 degrees and shifted 15 mm its centre
    still passes the distance check, but the overlap names the problem."""
    data, affine = mni_brain
    mask = data[..., 0] > 0
    assert grid.mni_dice(mask, affine) > 0.97
    assert grid.registration_warning(mask, affine, "run.nii.gz") == []
    angle = np.deg2rad(15)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    moved = rotation @ affine
    moved[:3, 3] += (15.0, 0, 0)
    grid.check_registered(mask, moved, "run.nii.gz")  # the centre alone does not notice
    notes = grid.registration_warning(mask, moved, "run.nii.gz")
    assert len(notes) == 1 and "run.nii.gz: its brain overlaps the MNI152 brain at Dice 0." in notes[0]
    assert float(re.search(r"Dice ([\d.]+)", notes[0]).group(1)) < 0.85
