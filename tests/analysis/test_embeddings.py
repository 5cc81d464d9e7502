"""Encoder mode: loading any checkpoint, clip/subject embeddings, writers, embed.py end to end."""
import json

import numpy as np
import pytest
import torch

from analysis_helpers import planted_subject_clips, run_script, save_lightning_like, tiny_module
from neuromamba.analysis.embeddings import (
    extract_clip_embeddings,
    read_embeddings,
    run_embeddings,
    subject_embeddings,
    write_clip_embeddings,
    write_subject_embeddings,
)
from neuromamba.analysis.encoder import load_encoder
from neuromamba.analysis.reid import reidentification_metrics


def test_released_checkpoint_embeddings_equal_model_features(tiny_released_checkpoint):
    path, model = tiny_released_checkpoint
    encoder = load_encoder(str(path), img_size=(24, 24, 24, 4), patch_size=(6, 6, 6, 2))
    assert encoder.format == "released" and encoder.head is None
    batches = planted_subject_clips(num_subjects=2, runs=1, clips_per_run=2)
    clips = extract_clip_embeddings(encoder, batches)
    model.eval()
    with torch.no_grad():
        model.background_removal = "packed"
        expected = model(batches[0]["fmri"]).features.mean(dim=1)[0].numpy()
    np.testing.assert_allclose(clips.embeddings[0], expected, rtol=1e-5, atol=1e-6)
    assert clips.subjects == ["s0", "s0", "s1", "s1"] and clips.starts.tolist() == [0, 4, 0, 4]
    subjects = subject_embeddings(clips)
    np.testing.assert_allclose(subjects.embeddings[0], clips.embeddings[:2].mean(0), rtol=1e-6)
    assert subjects.num_clips.tolist() == [2, 2]


def test_embeddings_do_not_depend_on_batch_composition(tiny_released_checkpoint):
    path, _ = tiny_released_checkpoint
    encoder = load_encoder(str(path), img_size=(24, 24, 24, 4))
    singles = planted_subject_clips(num_subjects=2, runs=1, clips_per_run=1)
    merged = [{"fmri": torch.cat([b["fmri"] for b in singles]), "subject": ["s0", "s1"],
               "run": ["r0", "r0"], "start": torch.tensor([0, 0])}]
    one = extract_clip_embeddings(encoder, singles).embeddings
    two = extract_clip_embeddings(encoder, merged).embeddings
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-5)


def test_wrong_img_size_for_backbone_checkpoint_is_explained(tiny_released_checkpoint):
    path, _ = tiny_released_checkpoint
    with pytest.raises(ValueError, match="img_size"):
        load_encoder(str(path), img_size=(48, 48, 48, 4))


def test_lightning_checkpoint_carries_head_and_target_stats(tmp_path):
    module = tiny_module("regression", target_mean=50.0, target_std=10.0)
    path = save_lightning_like(module, tmp_path / "reg.ckpt")
    encoder = load_encoder(path)
    assert encoder.format == "lightning" and encoder.task == "regression"
    assert encoder.img_size == (24, 24, 24, 4)
    x = planted_subject_clips(num_subjects=1, runs=1, clips_per_run=1)[0]["fmri"]
    with torch.no_grad():
        standardised = module.eval()(x).item()
        assert encoder.predict(x).item() == pytest.approx(standardised * 10.0 + 50.0, rel=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_writers_round_trip(tmp_path, suffix, tiny_released_checkpoint):
    path, _ = tiny_released_checkpoint
    encoder = load_encoder(str(path), img_size=(24, 24, 24, 4))
    clips = extract_clip_embeddings(encoder, planted_subject_clips(num_subjects=2, runs=2, clips_per_run=1))
    out = tmp_path / f"clips{suffix}"
    write_clip_embeddings(str(out), clips)
    ids, emb = read_embeddings(str(out))
    np.testing.assert_allclose(emb, clips.embeddings, rtol=1e-6)
    assert list(ids["subject"]) == clips.subjects and list(ids["run"].astype(str)) == clips.runs
    subj_out = tmp_path / f"subjects{suffix}"
    write_subject_embeddings(str(subj_out), subject_embeddings(clips))
    ids, emb = read_embeddings(str(subj_out))
    assert list(ids["num_clips"]) == [2, 2] and emb.shape == (2, 32)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow installed")
    except ImportError:
        pass
    from neuromamba.analysis.embeddings import write_embeddings

    with pytest.raises(ValueError, match="pyarrow"):
        write_embeddings(str(tmp_path / "x.parquet"), {"subject": np.array(["a"])}, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="unsupported output format"):
        write_embeddings(str(tmp_path / "x.xlsx"), {"subject": np.array(["a"])}, np.zeros((1, 2)))


def test_planted_subject_pattern_is_reidentified(tiny_released_checkpoint):
    """Each subject has a fixed spatial pattern shared by its runs; an untrained encoder's
    run embeddings retrieve the other run of the same subject far above chance."""
    path, _ = tiny_released_checkpoint
    encoder = load_encoder(str(path), img_size=(24, 24, 24, 4))
    clips = extract_clip_embeddings(encoder, planted_subject_clips(num_subjects=8, runs=2, clips_per_run=1))
    subjects, runs, emb = run_embeddings(clips)
    m = reidentification_metrics(emb, subjects, runs)
    assert m["chance_top1"] == pytest.approx(1 / 15)
    assert m["top1"] >= 0.75 and m["top1"] > 8 * m["chance_top1"]


def test_embed_cli_on_dummy(tmp_path, repo_root, tiny_released_checkpoint):
    path, _ = tiny_released_checkpoint
    out = tmp_path / "emb.npz"
    res = run_script(repo_root, "embed", "--checkpoint", path,
                     "--img_size", "24", "24", "24", "4", "--dataset_name", "Dummy",
                     "--dummy_num_subjects", "10", "--dummy_num_runs", "2", "--dummy_num_frames", "4",
                     "--output", out, "--probe_targets", "label", "--reid", "--json",
                     tmp_path / "r.json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_clips"] == 20 and result["num_subjects"] == 10
    assert result["probes"][0]["target"] == "label" and result["probes"][0]["n"] == 10
    assert result["reid"][0]["num_queries"] == 20
    ids, emb = read_embeddings(str(tmp_path / "emb_subjects.npz"))
    assert emb.shape == (10, 32) and len(set(ids["subject"])) == 10
    assert "linear probes" in res.stdout and "re-identification" in res.stdout


def test_embed_cli_missing_checkpoint_is_one_line(tmp_path, repo_root):
    res = run_script(repo_root, "embed", "--checkpoint", tmp_path / "nope.pt",
                     "--output", tmp_path / "e.csv")
    assert res.returncode == 2 and res.stderr.strip().startswith("error:")
    assert "nope.pt" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_embed_cli_run_level_probe_for_task_state(tmp_path, repo_root, tiny_released_checkpoint):
    """Per-run labels (task state): the probe's rows are runs, folds grouped by subject."""
    path, _ = tiny_released_checkpoint
    res = run_script(repo_root, "embed", "--checkpoint", path, "--img_size", "24", "24", "24", "4",
                     "--dummy_num_subjects", "12", "--dummy_num_runs", "4", "--dummy_label_level", "run",
                     "--dummy_num_frames", "4", "--output", tmp_path / "e.csv", "--probe_targets", "label",
                     "--probe_level", "run", "--json", tmp_path / "r.json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    (probe,) = json.loads((tmp_path / "r.json").read_text())["probes"]
    assert probe["n"] == 48 and probe["subjects"] == 12
    assert probe["auroc"] >= 0.9


def test_embed_age_probe_is_regression_and_reid_needs_two_runs(tmp_path, repo_root, tiny_released_checkpoint):
    """A named target's task comes from main.py's rule (age: regression); with one run per
    subject re-identification says why it is skipped and the probes are still printed."""
    path, _ = tiny_released_checkpoint
    res = run_script(repo_root, "embed", "--checkpoint", path,
                     "--img_size", "24", "24", "24", "4", "--dataset_name", "Dummy",
                     "--dummy_num_subjects", "10", "--dummy_num_frames", "4", "--output", tmp_path / "e.csv",
                     "--probe_targets", "age", "label", "--reid", "--json", tmp_path / "r.json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    tasks = {row["target"]: row["task"] for row in result["probes"]}
    assert tasks == {"age": "regression", "label": "classification"}
    assert result["reid"] == []
    assert "re-identification skipped: it needs at least two runs per subject" in res.stdout
    assert "linear probes" in res.stdout


def test_embed_says_when_it_clamps_the_folds_to_the_subjects(tmp_path, repo_root, tiny_released_checkpoint):
    path, _ = tiny_released_checkpoint
    res = run_script(repo_root, "embed", "--checkpoint", path, "--img_size", "24", "24", "24", "4",
                     "--dummy_num_subjects", "4", "--dummy_num_frames", "4", "--output", tmp_path / "e.csv",
                     "--probe_targets", "age", "--json", tmp_path / "r.json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "4-fold CV grouped by subject; --probe_folds 5 clamped to the 4 subjects" in res.stdout
    assert json.loads((tmp_path / "r.json").read_text())["probe_folds"] == 4
