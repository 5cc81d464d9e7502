"""Classical baselines: features computed exactly, fitted and scored on the run's own split."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from analysis_helpers import run_script
from neuromamba.analysis.baselines import (fc_features, parcel_time_series, patch_stats_features,
                                           token_grid_labels)


def test_features_on_a_tiny_known_volume():
    # 4x2x2 voxels, 2 frames; patches of 2x2x2 -> 2 parcels along the first axis
    clip = np.zeros((4, 2, 2, 2))
    clip[:2, ..., 0], clip[:2, ..., 1] = 1.0, 3.0      # parcel 0: 1 then 3
    clip[2:, ..., 0], clip[2:, ..., 1] = 5.0, 4.0      # parcel 1: 5 then 4 (one voxel out of brain)
    clip[3, 1, 1] = (100.0, -100.0)
    brain = np.ones((4, 2, 2), bool)
    brain[3, 1, 1] = False
    labels = token_grid_labels((4, 2, 2), (2, 2, 2))
    assert labels.tolist() == [[[0, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [1, 1]], [[1, 1], [1, 1]]]
    series = parcel_time_series(clip, labels, brain, 2)
    np.testing.assert_allclose(series, [[1.0, 3.0], [5.0, 4.0]])
    np.testing.assert_allclose(patch_stats_features(series), [2.0, 4.5, 1.0, 0.5])
    three = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 4.0]])
    z = fc_features(three, np.array([0, 1, 2]))
    r02 = np.corrcoef(three[0], three[2])[0, 1]
    np.testing.assert_allclose(z, np.arctanh([-0.999999, r02, -np.clip(r02, -0.999999, 0.999999)]), atol=1e-6)


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    from neuromamba.cli import parse_args, parse_run
    from neuromamba.training.runner import run

    out = tmp_path_factory.mktemp("base")
    result = run(parse_run(["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
                             "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
                             "--downstream_task", "sex", "--dummy_num_subjects", "20", "--train_split", "0.5",
                             "--val_split", "0.25", "--max_epochs", "1", "--seed", "4",
                             "--output_dir", str(out), "--run_name", "r"]))
    return Path(result["run_dir"])


def _subjects(path):
    with open(path) as f:
        return [row["subject"] for row in csv.DictReader(f)]


def test_baselines_use_the_runs_split_and_metrics(classification_run, repo_root):
    res = run_script(repo_root, "baseline", "--run_dir", classification_run)
    assert res.returncode == 0, res.stderr
    assert "patch_stats    test" in res.stdout and "fc             test" in res.stdout
    base = classification_run / "baselines"
    for feature_set in ("patch_stats", "fc"):
        # the same test subjects as the model's own evaluation, one row each
        assert _subjects(base / feature_set / "predictions_test.csv") == \
            _subjects(classification_run / "predictions_test.csv")
        assert (base / feature_set / "roc_test.png").stat().st_size > 1000
    summary = json.loads((base / "summary.json").read_text())
    assert summary["split_file"].endswith(".txt") and summary["parcels"].startswith("token grid (64")
    stats = summary["feature_sets"]["patch_stats"]
    assert stats["n_features"] == 128 and "model__C" in stats["chosen"]
    # the Dummy data plant a brighter region in one class: parcel means find it
    assert stats["test"]["auroc"] >= 0.8


def test_baseline_refuses_a_pretraining_run(tmp_path, repo_root):
    (tmp_path / "args.yaml").write_text("task: pretraining\n")
    res = run_script(repo_root, "baseline", "--run_dir", tmp_path)
    assert res.returncode == 2 and "pretraining run" in res.stderr


def test_screened_voxels_find_a_small_region_the_parcel_average_dilutes():
    """A careful analyst's baseline: a region of 8 voxels inside a 216-voxel parcel, brighter in
    one class. The parcel's mean dilutes it 27-fold; univariate screening of voxels (fitted on
    the training subjects only, inside the cross-validation) keeps it."""
    from sklearn.metrics import roc_auc_score

    from neuromamba.analysis.baselines import fit_model

    rng = np.random.default_rng(0)
    n, parcel = 120, 216
    y = np.arange(n) % 2
    voxels = rng.standard_normal((n, 4 * parcel))  # 4 parcels of 216 voxels, subject noise
    voxels[:, 100:108] += 1.5 * y[:, None]  # the planted region: 8 voxels of parcel 0
    parcels = voxels.reshape(n, 4, parcel).mean(axis=2)
    groups = [f"s{i}" for i in range(n)]
    train, test = slice(0, 80), slice(80, n)
    scores = {}
    for name, X, screen in (("parcel mean", parcels, False), ("screened voxels", voxels, True)):
        model, chosen = fit_model(X[train], y[train], groups[:80], "classification", screen=screen)
        scores[name] = roc_auc_score(y[test], model.predict_proba(X[test])[:, 1])
        if screen:
            assert chosen["screen__percentile"] in (1, 5, 10, 25)
            kept = np.flatnonzero(model.named_steps["screen"].get_support())
            assert set(range(100, 108)) <= set(kept)  # the region survives the screening
    assert scores["screened voxels"] > 0.97 and scores["parcel mean"] < 0.8, scores


def test_baseline_reports_the_best_feature_set_on_validation(classification_run, repo_root):
    res = run_script(repo_root, "baseline", "--run_dir", classification_run, "--features",
                     "temporal_mean", "voxel_mean", "fc_screened")
    assert res.returncode == 0, res.stderr
    summary = json.loads((classification_run / "baselines" / "summary.json").read_text())
    sets = summary["feature_sets"]
    assert "screen__percentile" in sets["voxel_mean"]["chosen"] and sets["voxel_mean"]["n_features"] > 1000
    val = {name: entry["val"]["auroc"] for name, entry in sets.items() if entry["val"]["auroc"] is not None}
    assert summary["best_on_validation"] == max(val, key=lambda k: (val[k], k))
    assert f"best on validation: {summary['best_on_validation']}" in res.stdout


def test_baselines_read_a_tuned_run_under_another_input_without_dropping_frames(tmp_path):
    """baseline.py reads a run's clips under its own --input_scaling_method (znorm_zeroback by
    default): the frames a static token would take follow the input read, not the run's, so a
    tuned run's clips keep all their raw frames (they lost the first 2 of T)."""
    import yaml

    from neuromamba.analysis.baseline_cli import read_run_folder
    from neuromamba.cli import args_to_dict, parse_args

    record = args_to_dict(parse_args(["--recipe", "tuned", "--downstream_task", "sex",
                                      "--img_size", "24", "24", "24", "8", "--output_dir", str(tmp_path)]))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "split_Dummy_seed1234.txt").write_text("train_subjects\na\nval_subjects\nb\ntest_subjects\nc\n")
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(record))
    own = read_run_folder(str(tmp_path))
    other = read_run_folder(str(tmp_path), "znorm_zeroback")
    assert own.spec.static_frames == 2 and other.spec.static_frames == 0
    assert own.spec.input.img_size == other.spec.input.img_size == (24, 24, 24, 8)
    assert other.split_file.endswith("split_Dummy_seed1234.txt")
