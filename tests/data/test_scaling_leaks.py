"""Inputs for pretraining never let a target follow from the tokens before it; the voxel_*
scalings keep fluctuation amplitude whatever the static contrast; each scaling says what it keeps."""
import numpy as np
import pytest

from neuromamba.cli import parse_args, run_config_of
from neuromamba.data import scaling, store
from neuromamba.data.datamodule import FMRIDataModule


def _clips(method, n=12):
    # Dummy runs of the default length: two clips, or the shortest safe run for the run mean
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), pretraining=True, dummy_num_subjects=6,
                        input_scaling_method=method, deliver="model")
    dm.setup("fit")
    items = [dm.datasets["train"][i] for i in range(min(n, len(dm.datasets["train"])))]
    return [(it["fmri"][0].numpy(), it["brain_mask"].numpy().astype(bool)) for it in items]


def _leak(method) -> tuple:
    """How exactly each brain voxel's last frame follows from its earlier frames in the clip,
    pooled over clips: (unexplained share of the best linear prediction, the same for the
    rule 'minus the sum of the earlier frames'). 0 is an exact constraint: a leak."""
    rows, targets = [], []
    for clip, brain in _clips(method):
        series = clip[brain].astype(np.float64)  # (V, T)
        rows.append(series[:, :-1])
        targets.append(series[:, -1])
    X, y = np.concatenate(rows), np.concatenate(targets)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    best = (y - X @ coef).var() / y.var()
    minus_sum = np.mean((y + X.sum(1)) ** 2) / np.mean(y ** 2)
    return best, minus_sum


def test_the_clip_demean_leak_is_found():
    # the test can fail: znorm_demean's last frame is minus the sum of the others
    best, minus_sum = _leak("znorm_demean")
    assert best < 1e-8 and minus_sum < 1e-8


@pytest.mark.parametrize("method", scaling.LEAK_FREE)
def test_no_pretraining_input_lets_the_last_frame_follow_from_the_others(method):
    best, minus_sum = _leak(method)
    assert best > 1e-3 and minus_sum > 0.1, (method, best, minus_sum)


def test_pretraining_on_a_leaking_input_is_refused():
    with pytest.raises(ValueError, match="leaks the future into pretraining"):
        parse_args(["--pretraining", "--input_scaling_method", "znorm_demean"])
    parse_args(["--pretraining", "--recipe", "tuned"])  # the tuned recipe pretrains leak-free


def test_voxel_demean_keeps_amplitude_whatever_the_static_contrast():
    rng = np.random.default_rng(0)
    brain = np.zeros((8, 8, 8), bool)
    brain[2:6, 2:6, 2:6] = True
    texture = 500 + 50 * rng.standard_normal((8, 8, 8))
    fluct = rng.standard_normal((10, 8, 8, 8))
    outs = {}
    for contrast in (1.0, 3.0):
        run = np.where(brain, 1000 + contrast * (texture - 500) + fluct, 0).astype(np.float32)  # (T, D, H, W)
        voxel = store.compute_voxel_stats(run, brain)
        stats = store.compute_stats(run).as_dict()
        clip = np.moveaxis(run[:4], 0, -1).copy()
        outs[contrast] = {m: scaling.scale_inplace(clip.copy(), stats, m, voxel)
                          for m in ("voxel_demean", "znorm_demean")}
    np.testing.assert_allclose(outs[1.0]["voxel_demean"], outs[3.0]["voxel_demean"], atol=1e-3)
    ratio = outs[1.0]["znorm_demean"][brain].std() / outs[3.0]["znorm_demean"][brain].std()
    assert ratio > 2.0  # the old scaling divided by the static contrast


def test_the_static_token_is_the_runs_static_image():
    (clip, brain), *_ = _clips("voxel_demean_static")
    static = clip[..., 0]
    np.testing.assert_array_equal(clip[..., 0], clip[..., 1])  # one token of patch T = 2 frames
    assert abs(static[brain].mean()) < 1e-4 and static[brain].std() == pytest.approx(1.0, abs=1e-3)
    assert np.all(static[~brain] == 0)
    assert clip.shape[-1] == 6  # 2 static frames on top of the 4 frames read (--img_size T)


@pytest.mark.parametrize("name", sorted(scaling.SCALING_METHODS))
def test_keeps_static_is_what_the_scaling_does(name):
    """``keeps_static`` is measured, not declared: the model's clip still shows the run's static
    image (each voxel's mean, anatomy and contrast) exactly when the field says it does."""
    rng = np.random.default_rng(0)
    brain = np.zeros((20, 20, 20), bool)
    brain[2:18, 2:18, 2:18] = True  # 4,096 voxels: a chance correlation is ~0.02
    texture = np.where(brain, 300 * rng.standard_normal((20, 20, 20)), 0)
    run = np.where(brain, 1000 + texture + rng.standard_normal((12, 20, 20, 20)), 0).astype(np.float32)
    voxel = store.compute_voxel_stats(run, brain)
    clip = scaling.scale_clip(np.moveaxis(run[:4], 0, -1).copy(), store.compute_stats(run).as_dict(),
                              name, voxel, scaling.static_frames_for(name, 2))
    frames = clip[brain].T  # (T', brain voxels): does any frame of the clip show the image?
    correlation = max(abs(np.corrcoef(f, texture[brain])[0, 1]) if f.std() > 1e-6 else 0.0
                      for f in frames)
    assert (correlation > 0.9) == scaling.get_scaling(name).keeps_static, (name, correlation)
    assert correlation > 0.9 or correlation < 0.2, (name, correlation)


def test_every_scaling_says_what_it_keeps():
    doc = scaling.__doc__
    for name, method in scaling.SCALING_METHODS.items():
        assert f"``{name}``" in doc, name
        section = doc.split(f"``{name}``", 1)[1].split("\n- ", 1)[0]
        assert "Keeps" in section, name
        assert method.keeps_static == ("no static image" not in section.lower()), name


def test_old_files_get_voxel_stats_computed(tmp_path):
    import h5py

    rng = np.random.default_rng(1)
    brain = np.zeros((6, 6, 6), bool)
    brain[1:5, 1:5, 1:5] = True
    run = np.where(brain, 100 + rng.standard_normal((7, 6, 6, 6)), 0).astype(np.float32)
    path = store.write_run(tmp_path / "r.h5", run, subject="s", run="r", stats=store.compute_stats(run),
                           brain_mask=brain, storage_dtype=np.dtype(np.float32))
    with h5py.File(path, "r") as f:
        stored = store.read_voxel_stats(f)
    with h5py.File(path, "a") as f:  # as written before voxel statistics existed
        del f["voxel_mean"]
        del f.attrs["stats_fluct_std"]
    with h5py.File(path, "r") as f:
        computed = store.read_voxel_stats(f, block=3)
    np.testing.assert_allclose(stored.mean_image, computed.mean_image, rtol=1e-6)
    assert stored.fluct_std == pytest.approx(computed.fluct_std, rel=1e-6)
    np.testing.assert_allclose(stored.mean_image[brain], run.mean(0)[brain], rtol=1e-6)


def test_pretraining_on_short_runs_is_refused_for_run_mean_inputs(tmp_path):
    """Pretraining refuses runs too short for the run mean (here: runs one clip long, where the
    last frame follows from the others entirely), before it writes anything; the same clips
    read unlabelled by the analysis tools (embed, check_flops) are not pretraining and load."""
    from neuromamba.cli import parse_args
    from neuromamba.training.runner import run

    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), pretraining=True, dummy_num_subjects=6,
                        dummy_num_frames=4, input_scaling_method="voxel_demean")
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"shorter than 20 frames.*up to 100\.0% of a pretraining target"):
        dm.refuse_leaking_runs()
    args = parse_args(["--pretraining", "--input_scaling_method", "voxel_demean", "--dummy_num_subjects", "6",
                       "--dummy_num_frames", "8", "--img_size", "24", "24", "24", "4", "--embed_dim", "16",
                       "--depth", "1", "--accelerator", "cpu", "--output_dir", str(tmp_path), "--run_name", "r"])
    with pytest.raises(ValueError, match=r"6 run\(s\) are shorter than 20 frames.*up to 8\.6%"):
        run(run_config_of(args))
    assert not (tmp_path / "r").exists()  # nothing written
    FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), pretraining=False, downstream_task="sex",
                   dummy_num_subjects=6, dummy_num_frames=4, input_scaling_method="voxel_demean").setup("fit")


def _white_noise_runs(folder, frames: int, subjects: int = 6):
    """Runs with no signal: every voxel's frames independent. What a leak through the run mean
    would make predictable is all that is predictable here."""
    rng = np.random.default_rng(frames)
    brain = np.zeros((12, 12, 12), bool)
    brain[1:11, 1:11, 1:11] = True
    for i in range(subjects):
        run = np.where(brain, 1000 + 10 * rng.standard_normal((frames, 12, 12, 12)), 0).astype(np.float32)
        store.write_run(store.run_path(folder, f"s{i}", "rest"), run, subject=f"s{i}", run="rest",
                        stats=store.compute_stats(run, frame_axis=0), brain_mask=brain,
                        storage_dtype=np.float32)
    return folder


def _last_token_share(dm) -> float:
    """Pooled over brain voxels and clips: the share of the last token's frames that the best
    linear predictor recovers from the clip's earlier frames."""
    dm.setup("fit")
    rows, targets = [], []
    for part in dm.datasets["train"].datasets:
        for i in range(len(part)):
            item = part[i]
            series = item["fmri"][0].numpy()[item["brain_mask"].numpy().astype(bool)].astype(np.float64)
            for target in (-2, -1):  # the two frames of the last token (patch T = 2)
                rows.append(series[:, :-2])
                targets.append(series[:, target])
    X, y = np.concatenate(rows), np.concatenate(targets)
    X = np.column_stack([X, np.ones(len(X))])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return 1.0 - (y - X @ coef).var() / y.var()


def test_short_runs_are_refused_and_the_shortest_accepted_leaks_under_one_percent(tmp_path):
    """voxel_demean subtracts the run's mean, which includes the clip's future frames: on runs
    one frame longer than the clip 57% of the last token was predictable, 8.6% at 16 frames.
    Pretraining now refuses runs shorter than the safe length; on the shortest accepted run the
    measured predictable share of the last token is under 1%."""
    from neuromamba.data.scaling import LEAK_LIMIT, min_safe_run_frames, predictable_share

    clip = 4
    safe = min_safe_run_frames(clip)
    assert safe == 20 and predictable_share(clip, safe) <= LEAK_LIMIT < predictable_share(clip, safe - 1)
    flags = dict(dataset_name="HCP", img_size=(12, 12, 12, clip), input_scaling_method="voxel_demean",
                 train_split=0.9, val_split=0.05, deliver="model", pretraining=True)
    short = _white_noise_runs(tmp_path / "short", safe - 1)
    short_dm = FMRIDataModule(image_path=str(short), **flags)
    short_dm.setup("fit")
    with pytest.raises(ValueError, match=rf"6 run\(s\) are shorter than {safe} frames.*would let up to "
                                         rf"1\.\d% of a pretraining target follow"):
        short_dm.refuse_leaking_runs()
    measured = _last_token_share(FMRIDataModule(image_path=str(_white_noise_runs(tmp_path / "ok", safe)),
                                                **flags))
    assert measured <= LEAK_LIMIT, measured
    # the measurement sees a leak where there is one: the same runs fine-tuned on a short cut
    leaky = _last_token_share(FMRIDataModule(image_path=str(_white_noise_runs(tmp_path / "leaky", 6)),
                                             **{**flags, "pretraining": False, "downstream_task": None}))
    assert leaky > 0.05, leaky
