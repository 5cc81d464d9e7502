"""NIfTI -> preprocessing -> dataset gives exactly the expected scaled values (computed here
independently); a legacy frame folder converts to the same clips."""
import h5py
import numpy as np
import pytest
import torch

from data_helpers import brain_run, save_nifti
from neuromamba.data.datasets import ClipDataset, ClipSpec, HDF5Reader, discover_hdf5_runs
from neuromamba.data.legacy import LegacyOptions, convert_legacy_folder
from neuromamba.data.preprocess_runner import PreprocessOptions, preprocess_folder
from neuromamba.data.scaling import SCALING_METHODS, background_value_for

OPTS = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4)
# The test runs are RAS, 2 mm, voxel (0,0,0) at (-24, -50, -20) mm (data_helpers.ORIGIN_MM).
# The 24^3 world grid (LAS, 2 mm, MNI brain centre (0, -17, 5) nearest its centre) has voxel
# (0,0,0) at (22, -40, -18) mm. So model index j = 23 - i on x (flipped: RAS -> LAS), i - 5 on y,
# i - 1 on z: the brain box [5:20, 8:25, 4:22] lands on [4:19, 3:20, 3:21], x reversed.
DST = (slice(4, 19), slice(3, 20), slice(3, 21))
SRC = (slice(19, 4, -1), slice(8, 25), slice(4, 22))
TOL = dict(rtol=1e-5, atol=1e-5)


def expected_grid(data):
    out = np.zeros((24, 24, 24, data.shape[3]), np.float64)
    out[DST] = data[SRC]
    return out


def independent_scaling(raw, brain_values, method, run=None):
    """``raw`` the clip's frames (D, H, W, T); ``run`` all of the run's frames (D, H, W, T_run),
    for the voxel_* scalings (each voxel's run mean, the run's pooled temporal std)."""
    if method.startswith("voxel_"):
        brain = (run != 0).any(axis=-1)
        mean = run.mean(axis=-1)
        pooled = np.sqrt(run.var(axis=-1)[brain].mean())
        return np.where(brain[..., None], (raw - mean[..., None]) / pooled, 0.0)
    mu, sd = brain_values.mean(), brain_values.std()
    lo, hi = brain_values.min(), brain_values.max()
    if method.startswith("znorm"):
        y = (raw - mu) / sd
    else:
        y = (raw - lo) / (hi - lo)
    if method.endswith("zeroback"):
        y = np.where(raw == 0, 0.0, y)
    if method == "znorm_demean":  # raw is one clip (D, H, W, T): voxel means over time removed
        y = y - y.mean(axis=-1, keepdims=True)
        y[~(raw != 0).any(axis=-1)] = 0.0
    return y


@pytest.fixture
def run_folder(tmp_path):
    folder = tmp_path / "nifti"
    folder.mkdir()
    data = {"int": brain_run(1), "fp16": brain_run(2, integer=False),
            "f32": brain_run(3, integer=False, scale=100.0)}
    for name, d in data.items():
        save_nifti(folder / f"sub-{name}_rest.nii.gz", d)
    return folder, data


def _dataset(root, method, length=3, within=1, between=1 / 3):  # every window
    entries = discover_hdf5_runs(root)
    return ClipDataset(entries, ClipSpec(length, within, between, method), HDF5Reader()), entries


def test_dtype_choice_is_recorded(run_folder, tmp_path):
    folder, _ = run_folder
    summary = preprocess_folder(folder, tmp_path / "h5", OPTS, progress=False)
    assert summary.count("done") == 3 and not summary.failed
    dtypes = {}
    for name in ("int", "fp16", "f32"):
        with h5py.File(tmp_path / "h5" / f"sub-{name}" / "rest.h5", "r") as f:
            dtypes[name] = f["fmri"].dtype
            assert f.attrs["storage_dtype"] == f["fmri"].dtype.name
            assert f.attrs["dtype_reason"]
            assert f["fmri"].chunks == (1, 24, 24, 24)
            assert f["brain_mask"].shape == (24, 24, 24)
            assert int(f["brain_mask"][()].sum()) == 15 * 17 * 18
    assert dtypes == {"int": np.int16, "fp16": np.float16, "f32": np.float32}


@pytest.mark.parametrize("method", sorted(SCALING_METHODS))
def test_dataset_returns_exact_scaled_values(run_folder, tmp_path, method):
    folder, data = run_folder
    preprocess_folder(folder, tmp_path / "h5", OPTS, progress=False)
    # clips of 3 frames every 2nd frame (length 6, span 5), starts 1/6 clip length = 1 frame apart
    ds, entries = _dataset(tmp_path / "h5", method, length=3, within=2, between=1 / 6)
    assert len(ds) == 3 * 2  # 6 frames, span 5 -> starts 0, 1 per run
    for i in range(len(ds)):
        item = ds[i]
        name = item["subject"].split("-")[1]
        raw = data[name].astype(np.float64)
        brain_values = raw[raw != 0]
        grid = expected_grid(raw)
        if name == "fp16":  # what is stored: fp16 rounding of the raw values
            grid = grid.astype(np.float16).astype(np.float64)
        frames = [item["start"].item() + 2 * k for k in range(3)]
        exact = expected_grid(raw)  # voxel statistics are taken before storage rounding
        expected = independent_scaling(grid[..., frames], brain_values, method, exact)
        assert item["fmri"].shape == (1, 24, 24, 24, 3) and item["fmri"].dtype == torch.float32
        np.testing.assert_allclose(item["fmri"][0].numpy(), expected, **TOL)
        # background: volume minimum for *_minback, exactly 0 for *_zeroback
        background = item["fmri"][0].numpy()[0, 0, 0]  # a corner: padding, one per frame
        if background_value_for(method) == "zero":
            assert np.all(background == 0.0)
        else:
            np.testing.assert_allclose(background, item["fmri"].min().item(), rtol=1e-6)
            assert np.all(background < 0)  # brain values are all positive here


def test_fp16_error_is_within_the_stated_tolerance(run_folder, tmp_path):
    folder, data = run_folder
    preprocess_folder(folder, tmp_path / "h5", OPTS, progress=False)
    with h5py.File(tmp_path / "h5" / "sub-fp16" / "rest.h5", "r") as f:
        stored = np.moveaxis(f["fmri"][()].astype(np.float64), 0, -1)
        std = f.attrs["stats_std"]
    exact = expected_grid(data["fp16"].astype(np.float64))
    assert np.abs(stored - exact).max() <= OPTS.fp16_tolerance * std


def _write_legacy(root, subject, frames_xyzt, stats):
    folder = root / "img" / subject
    folder.mkdir(parents=True)
    for t in range(frames_xyzt.shape[3]):
        torch.save(torch.from_numpy(frames_xyzt[..., t:t + 1].astype(np.float16)),
                   folder / f"frame_{t}.pt")
    torch.save(stats, folder / "global_stats.pt")


def test_legacy_folder_converts_to_the_same_clips(run_folder, tmp_path):
    """Legacy frames are the unpadded input grid; with the NIfTI that grid came from as
    --reference_nifti they land on the same world grid, giving the same clips."""
    folder, data = run_folder
    preprocess_folder(folder, tmp_path / "h5", OPTS, progress=False)
    legacy = tmp_path / "legacy"
    with h5py.File(tmp_path / "h5" / "sub-fp16" / "rest.h5", "r") as f:
        stats = {"valid_voxels": torch.tensor(f.attrs["stats_valid_voxels"]),
                 "global_mean": torch.tensor(f.attrs["stats_mean"]),
                 "global_std": torch.tensor(f.attrs["stats_std"]),
                 "global_max": torch.tensor(f.attrs["stats_max"])}
    _write_legacy(legacy, "sub-fp16", data["fp16"], stats)
    reference = str(folder / "sub-fp16_rest.nii.gz")
    summary = convert_legacy_folder(legacy, tmp_path / "from_legacy",
                                    LegacyOptions(min_frames=4, target_shape=(24, 24, 24),
                                                  reference_nifti=reference), progress=False)
    assert summary.count("done") == 1, summary.results
    with h5py.File(tmp_path / "from_legacy" / "sub-fp16" / "run0.h5", "r") as new, \
            h5py.File(tmp_path / "h5" / "sub-fp16" / "rest.h5", "r") as ref:
        np.testing.assert_array_equal(new["brain_mask"][()], ref["brain_mask"][()])
        np.testing.assert_array_equal(new.attrs["grid_affine"], ref.attrs["grid_affine"])
    for method in SCALING_METHODS:
        new, _ = _dataset(tmp_path / "from_legacy", method)
        ref, ref_entries = _dataset(tmp_path / "h5", method)
        ref_items = [ref[i] for i in range(len(ref)) if ref[i]["subject"] == "sub-fp16"]
        assert len(new) == len(ref_items) == 4
        for i, expected in enumerate(ref_items):
            got = new[i]
            assert got["start"] == expected["start"] and got["subject"] == "sub-fp16"
            # minmax uses the min computed from the fp16 frames: tiny difference allowed
            np.testing.assert_allclose(got["fmri"].numpy(), expected["fmri"].numpy(),
                                       rtol=0, atol=1e-3)


def test_legacy_frames_need_a_grid(tmp_path):
    """Frames on an unknown grid are refused with the fix; FSL's MNI152 2 mm grid is known."""
    frames = np.zeros((30, 34, 28, 4), np.float32)
    frames[5:20, 8:25, 4:22] = 100.0 + np.arange(4)
    _write_legacy(tmp_path / "odd", "s1", frames, {})
    summary = convert_legacy_folder(tmp_path / "odd", tmp_path / "out1", LegacyOptions(min_frames=4),
                                    progress=False)
    assert "--reference_nifti" in summary.failed[0].message
    fsl = np.zeros((91, 109, 91, 4), np.float32)
    fsl[30:60, 30:80, 20:60] = 100.0 + np.arange(4)  # around the MNI brain centre
    _write_legacy(tmp_path / "fsl", "s1", fsl, {})
    summary = convert_legacy_folder(tmp_path / "fsl", tmp_path / "out2",
                                    LegacyOptions(min_frames=4), progress=False)
    assert summary.count("done") == 1, summary.results
    with h5py.File(tmp_path / "out2" / "s1" / "run0.h5", "r") as f:
        assert f["fmri"].shape == (4, 96, 96, 96)
        # FSL voxel (30, 30, 20) is world (30, -66, -32) mm; the 96^3 grid starts at (94, -112, -90).
        assert f["brain_mask"][32, 23, 29] and not f["brain_mask"][31, 23, 29]
