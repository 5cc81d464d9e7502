"""The Dummy data: brain-shaped, deterministic, and its planted label signal is learnable."""
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from scipy.stats import pearsonr

from neuromamba.data.datamodule import FMRIDataModule
from neuromamba.data.dummy import (DummyGenerator, DummySpec, class_labels, signal_region,
                                   write_dummy_runs)


def _features(dm, split, over_time="mean"):
    xs, ys = [], []
    for batch in dm.model_batches(split, 16):
        x = getattr(batch["fmri"][:, 0], over_time)(-1)  # over time, then 4^3 average pool: 64 features
        xs.append(torch.nn.functional.adaptive_avg_pool3d(x, 4).flatten(1).numpy())
        ys.append(batch["target"].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_planted_class_signal_is_learnable_by_a_linear_probe():
    """The static part: the region's brightness, in the paper's input."""
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), downstream_task="sex",
                        dummy_num_subjects=40, dummy_num_frames=8, input_scaling_method="znorm_minback")
    dm.setup()
    for split in ("train", "val", "test"):  # every split holds both classes
        assert set(dm.datasets[split].datasets[0].targets) == {0, 1}
    x_train, y_train = _features(dm, "train")
    x_test, y_test = _features(dm, "test")
    probe = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    assert roc_auc_score(y_test, probe.predict_proba(x_test)[:, 1]) >= 0.9


def test_planted_functional_signal_survives_the_demeaned_input():
    """The functional part: the tuned recipe's input has no static image left (every brain
    voxel's mean over the clip is 0), yet the region's fluctuation tells the classes apart."""
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), downstream_task="sex",
                        dummy_num_subjects=40, dummy_num_frames=8, input_scaling_method="znorm_demean")
    dm.setup()
    clip = next(dm.model_batches("train", 1))["fmri"][0, 0].numpy()
    np.testing.assert_allclose(clip.mean(-1), 0.0, atol=1e-5)
    x_train, y_train = _features(dm, "train", over_time="std")
    x_test, y_test = _features(dm, "test", over_time="std")
    probe = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    assert roc_auc_score(y_test, probe.predict_proba(x_test)[:, 1]) >= 0.9


def test_planted_regression_signal_is_learnable():
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), downstream_task="age",
                        downstream_task_type="regression", dummy_num_subjects=40,
                        dummy_num_frames=4, input_scaling_method="znorm_minback")
    dm.setup()
    x_train, y_train = _features(dm, "train")
    x_test, y_test = np.concatenate([_features(dm, s)[0] for s in ("val", "test")]), \
        np.concatenate([_features(dm, s)[1] for s in ("val", "test")])
    model = Ridge(alpha=10.0).fit(x_train, y_train)
    assert pearsonr(model.predict(x_test), y_test)[0] > 0.8


def test_signal_sits_in_the_region_and_background_is_zero():
    spec = DummySpec(num_subjects=4, img_size=(20, 20, 20), num_frames=6, seed=0)
    gen = DummyGenerator(spec)
    region = signal_region(spec.img_size)
    labels = {s: c for (s, _), c in class_labels(spec).items()}
    means = {}
    for subject, c in labels.items():
        frames = gen.frames(subject, "run0", range(6))
        assert frames.shape == (6, 20, 20, 20) and frames[:, 0, 0, 0].max() == 0
        brain = frames[0] != 0
        assert 0.15 < brain.mean() < 0.4  # an ellipsoid, not a box
        means.setdefault(c, []).append(frames[:, region].mean() / frames[:, brain & ~region].mean())
    # the region is as bright as the shared anatomy makes it for class 0, and (1 + SIGNAL_GAIN)
    # = 2x brighter for class 1
    assert min(means[1]) > 1.6 * max(means[0])
    # frames depend on the frame index only: a clip equals the same frames of the whole run
    np.testing.assert_array_equal(gen.frames("dummy0001", "run0", [2, 3]),
                                  gen.frames("dummy0001", "run0", range(6))[2:4])


def test_dummy_can_be_written_as_hdf5(tmp_path):
    spec = DummySpec(num_subjects=3, img_size=(12, 12, 12), num_frames=5, seed=1)
    paths = write_dummy_runs(tmp_path, spec)
    assert len(paths) == 3 and all(p.exists() for p in paths)
    text = (tmp_path / "labels.csv").read_text().splitlines()
    assert text[0] == "subject,run,label,age" and len(text) == 4
