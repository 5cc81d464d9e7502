"""Predictor mode: one NIfTI -> preprocessing -> clips -> averaged prediction."""
import json
import nibabel as nib
import numpy as np
import pytest
import torch

from analysis_helpers import run_script, save_lightning_like, tiny_module


def write_nifti(path, shape=(22, 26, 20), frames=9, seed=0):
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    brain = sum(((a - (n - 1) / 2) / (0.4 * n)) ** 2 for a, n in zip(axes, shape)) <= 1
    # Integer values are stored exactly (int16), so the manual pipeline below can match exactly.
    data = np.where(brain[..., None], np.round(800 + 50 * rng.normal(size=shape + (frames,))), 0)
    data = data.astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-22, -42, -14]  # brain centred near the MNI152 brain's
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return data, affine


def expected_clips(data, affine, img_size=(24, 24, 24, 4), mode="znorm_minback"):
    """The same pipeline by hand: flip x (RAS -> LAS), place on the 24^3 2 mm world grid by the
    affine alone, then by ``mode``: z-norm over brain voxels (background: the volume minimum,
    the paper's znorm_minback), non-overlapping clips; znorm_demean: each brain voxel's mean over
    the clip removed, background 0; voxel_demean_static (the tuned recipe): the run's z-scored
    mean image as the first 2 frames, then each voxel minus its run mean over the run's pooled
    temporal std."""
    las = data[::-1]
    ox = affine[0, 3] + affine[0, 0] * (data.shape[0] - 1)  # world x of LAS voxel 0
    oy, oz = affine[1, 3], affine[2, 3]
    gx, gy, gz = 22.0, -40.0, -18.0  # world grid voxel (0,0,0): see tests/data/test_roundtrip.py
    shift = [int((gx - ox) / 2), int((oy - gy) / 2), int((oz - gz) / 2)]
    grid = np.zeros(tuple(img_size[:3]) + data.shape[3:], np.float64)
    src = tuple(slice(max(0, -s), min(n, g - s)) for s, n, g in zip(shift, las.shape, img_size))
    dst = tuple(slice(sl.start + s, sl.stop + s) for sl, s in zip(src, shift))
    grid[dst] = las[src]
    brain = grid[grid != 0]
    assert brain.size == np.count_nonzero(data)  # the whole brain is on the grid
    scaled = (grid - brain.mean()) / brain.std()
    mask = (grid != 0).any(-1)
    T = img_size[3]
    clips = []
    if mode == "voxel_demean_static":
        mean = grid.mean(-1)
        fluct = np.sqrt(grid.var(-1)[mask].mean())
        static = np.where(mask, (mean - mean[mask].mean()) / mean[mask].std(), 0.0)
        for s in range(0, data.shape[-1] - T + 1, T):  # T frames read, the static token on top
            part = np.where(mask[..., None], (grid[..., s:s + T] - mean[..., None]) / fluct, 0.0)
            clip = np.concatenate([static[..., None], static[..., None], part], axis=-1)
            clips.append(torch.from_numpy(clip.astype(np.float32))[None, None])
        return clips
    for s in range(0, data.shape[-1] - T + 1, T):
        clip = scaled[..., s:s + T].copy()
        if mode == "znorm_demean":
            clip -= clip.mean(-1, keepdims=True)
            clip[~(grid[..., s:s + T] != 0).any(-1)] = 0.0
        clips.append(torch.from_numpy(clip.astype(np.float32))[None, None])
    return clips


def _run(repo_root, *args):
    return run_script(repo_root, "predict", *args)


@pytest.mark.parametrize("recipe, mode", [("paper", "znorm_minback"), ("tuned", "voxel_demean_static"),
                                          ("tuned", "znorm_demean")])
def test_classification_probabilities_match_manual_pipeline(tmp_path, repo_root, recipe, mode):
    module = tiny_module("classification", num_classes=3,
                         extra=["--recipe", recipe, "--input_scaling_method", mode]).eval()
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = save_lightning_like(module, run_dir / "checkpoints" / "best.ckpt")
    (run_dir / "label_classes.json").write_text(json.dumps(
        {"column": "diagnosis", "classes": {"ADHD": 0, "ASD": 1, "HC": 2}}))
    data, affine = write_nifti(tmp_path / "sub-01_task-rest_bold.nii.gz")
    res = _run(repo_root, "--checkpoint", ckpt, "--nifti", tmp_path / "sub-01_task-rest_bold.nii.gz",
               "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["num_clips"] == 2 and out["target"] == "diagnosis"  # the same clips under every input
    assert list(out["probabilities"]) == ["ADHD", "ASD", "HC"]
    with torch.no_grad():
        probs = torch.cat([torch.softmax(module(x), -1)
                           for x in expected_clips(data, affine, mode=mode)]).mean(0)
    np.testing.assert_allclose(list(out["probabilities"].values()), probs.numpy(), rtol=1e-4, atol=1e-5)
    assert out["predicted_class"] == ["ADHD", "ASD", "HC"][int(probs.argmax())]


def test_regression_value_in_original_units(tmp_path, repo_root):
    module = tiny_module("regression", target_mean=40.0, target_std=12.0).eval()
    ckpt = save_lightning_like(module, tmp_path / "reg.ckpt")
    data, affine = write_nifti(tmp_path / "scan.nii.gz", frames=8)
    res = _run(repo_root, "--checkpoint", ckpt, "--nifti", tmp_path / "scan.nii.gz", "--device", "cpu",
               "--json", tmp_path / "p.json")
    assert res.returncode == 0, res.stderr
    assert "prediction:" in res.stdout
    out = json.loads((tmp_path / "p.json").read_text())
    assert out["target"] == "age"  # the regression target is named too
    with torch.no_grad():
        std_values = torch.cat([module(x) for x in expected_clips(data, affine)])[:, 0]
    assert out["value"] == pytest.approx(float(std_values.mean()) * 12.0 + 40.0, rel=1e-4)


def test_bad_inputs_are_one_line_errors(tmp_path, repo_root, tiny_released_checkpoint):
    write_nifti(tmp_path / "scan.nii.gz", frames=3)
    module = tiny_module("classification")
    ckpt = save_lightning_like(module, tmp_path / "c.ckpt")
    res = _run(repo_root, "--checkpoint", ckpt, "--nifti", tmp_path / "scan.nii.gz")
    assert res.returncode == 2 and "frames" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    backbone, _ = tiny_released_checkpoint
    res = _run(repo_root, "--checkpoint", backbone, "--nifti", tmp_path / "scan.nii.gz")
    assert res.returncode == 2 and "no task head" in res.stderr
    res = _run(repo_root, "--checkpoint", ckpt, "--nifti", tmp_path / "missing.nii.gz")
    assert res.returncode == 2 and "missing.nii.gz" in res.stderr
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(open(ckpt, "rb").read()[:100])
    res = _run(repo_root, "--checkpoint", truncated, "--nifti", tmp_path / "scan.nii.gz")
    assert res.returncode == 2 and "truncated.ckpt: not a PyTorch checkpoint" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_run_goes_onto_the_checkpoints_grid(tmp_path, repo_root):
    """A checkpoint trained on 3 mm data gets a 2 mm scan resampled to 3 mm; a checkpoint
    trained on another world placement refuses the scan."""
    import h5py

    from neuromamba.data.grid import world_grid

    module = tiny_module("classification").eval()
    grid3 = {"shape": [24, 24, 24], "voxel_size": [3.0] * 3,
             "affine": [float(v) for v in world_grid((24, 24, 24), 3.0).affine_array.ravel()]}
    module.hparams["config"]["data_grid"] = grid3
    ckpt = save_lightning_like(module, tmp_path / "m3.ckpt")
    write_nifti(tmp_path / "scan.nii.gz", frames=8)
    res = _run(repo_root, "--checkpoint", ckpt, "--nifti", tmp_path / "scan.nii.gz", "--json",
               "--workdir", tmp_path / "work")
    assert res.returncode == 0, res.stderr
    with h5py.File(next((tmp_path / "work").rglob("*.h5")), "r") as f:
        np.testing.assert_allclose(f.attrs["voxel_size"], [3.0] * 3)
    shifted = dict(grid3, affine=[v + (10.0 if i == 3 else 0.0) for i, v in enumerate(grid3["affine"])])
    module.hparams["config"]["data_grid"] = shifted
    ckpt = save_lightning_like(module, tmp_path / "shifted.ckpt")
    res = _run(repo_root, "--checkpoint", ckpt, "--nifti", tmp_path / "scan.nii.gz")
    assert res.returncode == 2 and "another grid" in res.stderr and "world placement" in res.stderr
