"""NeuroSTORM's task families, each selected by main.py flags, on Dummy data with a planted
signal: the clips go through the project's data module and a (frozen, random) NeuroMamba
backbone, a linear readout is fitted on the train split's embeddings (encoder mode), and the
family's metric on the held-out val+test units shows the planted signal is learned.
Re-identification of a planted subject pattern is in test_embeddings.py."""
from pathlib import Path

import numpy as np
import pytest
import torch

from neuromamba.analysis.embeddings import extract_clip_embeddings
from neuromamba.analysis.encoder import Encoder
from neuromamba.analysis.reid import mean_by_key

TINY = ["--embed_dim", "32", "--depth", "2", "--d_state", "8", "--headdim", "32",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--calc_loss_without_background",
        # a frozen random backbone's mean embedding reads the static part of the planted signal
        "--input_scaling_method", "znorm_minback"]


def _encoder():
    from neuromamba.models import FMamba

    torch.manual_seed(0)
    model = FMamba(embed_dim=32, depth=2, d_state=8, headdim=32, img_size=(24, 24, 24, 4),
                   background_removal="packed", pretraining=False).eval()
    return Encoder(model=model, head=None, prompt=None, img_size=(24, 24, 24, 4),
                   patch_size=(6, 6, 6, 2), input_scaling_method="znorm_minback", task="backbone")


def _units(flags, tmp_path):
    """main.py flags -> (args, {split: (unit embeddings, unit targets)}) at --eval_level."""
    from neuromamba.cli import parse_args, run_config_of
    from neuromamba.training.runner import build_datamodule

    args = parse_args(TINY + list(flags) + ["--output_dir", str(tmp_path)])
    dm = build_datamodule(run_config_of(args), Path(tmp_path))
    dm.setup("fit")
    encoder = _encoder()
    out = {}
    for split in ("train", "val", "test"):
        clips = extract_clip_embeddings(encoder, dm.model_batches(split, 16))
        keys = {"subject": clips.subjects, "run": list(zip(clips.subjects, clips.runs)),
                "clip": list(zip(clips.subjects, clips.runs, clips.starts.tolist()))}[args.eval_level]
        _, emb = mean_by_key(clips.embeddings, keys)
        _, target = mean_by_key(clips.extra["target"][:, None].astype(float), keys)
        out[split] = (emb, target[:, 0])
    return args, dm, out


def _held_out(units):
    return (np.concatenate([units["val"][0], units["test"][0]]),
            np.concatenate([units["val"][1], units["test"][1]]))


def _classify(units):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neuromamba.training.metrics import classification_metrics

    X, y = units["train"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y.astype(int))
    Xt, yt = _held_out(units)
    return classification_metrics(model.predict_proba(Xt), yt)


def _regress(units, mean, std):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neuromamba.training.metrics import regression_metrics

    X, y = units["train"]
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15))).fit(X, (y - mean) / std)
    Xt, yt = _held_out(units)
    return regression_metrics(model.predict(Xt), (yt - mean) / std, mean, std)


def test_demographic_sex_classification(tmp_path):
    args, _, units = _units(["--downstream_task", "sex", "--dummy_num_subjects", "30",
                             "--dummy_num_frames", "4"], tmp_path)
    assert args.task == "classification"
    metrics = _classify(units)
    assert metrics["auroc"] >= 0.9 and metrics["balanced_acc"] >= 0.75


def test_demographic_age_regression_in_years(tmp_path):
    args, dm, units = _units(["--downstream_task", "age", "--downstream_task_type", "regression",
                              "--dummy_num_subjects", "40", "--dummy_num_frames", "4"], tmp_path)
    assert args.task == "regression"
    mean, std = dm.train_target_stats()
    metrics = _regress(units, mean, std)
    assert metrics["pearson_r"] > 0.6
    assert metrics["mae_orig"] == pytest.approx(metrics["mae"] * std)  # years, not z-units


def test_phenotype_regression_from_any_csv_column(tmp_path):
    from neuromamba.data.dummy import DummySpec, write_dummy_runs

    data = tmp_path / "h5"
    write_dummy_runs(data, DummySpec(num_subjects=40, img_size=(24, 24, 24), num_frames=4),
                     task_type="regression")
    args, dm, units = _units(["--dataset_name", "CSV", "--image_path", str(data), "--label_csv",
                              str(data / "labels.csv"), "--downstream_task", "phenotype",
                              "--target_column", "age", "--downstream_task_type", "regression"],
                             tmp_path / "run")
    mean, std = dm.train_target_stats()
    assert 20 <= mean <= 80  # the CSV's own units
    assert _regress(units, mean, std)["pearson_r"] > 0.6


def test_disease_diagnosis_multiclass_with_per_class_auroc(tmp_path):
    args, dm, units = _units(["--downstream_task", "diagnosis", "--dummy_num_classes", "3",
                              "--dummy_num_subjects", "45", "--dummy_num_frames", "4"], tmp_path)
    assert dm.num_classes == 3
    metrics = _classify(units)
    assert {"auroc_class0", "auroc_class1", "auroc_class2", "balanced_acc"} <= set(metrics)
    assert metrics["auroc"] >= 0.8
    assert min(metrics[f"auroc_class{k}"] for k in range(3)) >= 0.7


def test_task_state_labels_per_run(tmp_path):
    args, _, units = _units(["--downstream_task", "state", "--dummy_num_runs", "4",
                             "--dummy_label_level", "run", "--eval_level", "run",
                             "--dummy_num_subjects", "12", "--dummy_num_frames", "4"], tmp_path)
    assert args.eval_level == "run"
    held_out_targets = _held_out(units)[1]
    assert set(held_out_targets) == {0.0, 1.0}  # states differ within subjects
    metrics = _classify(units)
    assert metrics["auroc"] >= 0.85


def test_sample_scripts_exist_for_every_family_and_mode(repo_root):
    folder = repo_root / "sample_scripts" / "tasks"
    for name in ("demographic", "phenotype_regression", "disease_diagnosis", "reidentification",
                 "task_state", "encoder_mode", "predictor_mode", "attribution", "prompt_tuning",
                 "multi_cohort_pretraining"):
        script = folder / f"{name}.sh"
        assert script.exists(), name
        assert "common.sh" in script.read_text()
