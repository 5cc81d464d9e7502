"""What a run folder says: summary.json, training curves, annotated ROC and scatter plots,
predictions written with sensible precision."""
import json
from pathlib import Path

import numpy as np

from neuromamba.cli import parse_run
from neuromamba.training.metrics import SubjectTable
from neuromamba.training.outputs import predictions_rows, roc_figure, scatter_figure
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--calc_loss_without_background", "--seed", "3"]


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return " | ".join(p for p in parts if p)


def test_summary_json_and_curves(tmp_path):
    result = run(parse_run(TINY + ["--downstream_task", "sex", "--dummy_num_subjects", "16", "--max_epochs", "2",
                                    "--train_split", "0.5", "--val_split", "0.25",
                                    "--output_dir", str(tmp_path), "--run_name", "r"]))
    run_dir = Path(result["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["monitor"] == "val/loss" and summary["best_epoch"] in (0, 1)
    assert summary["final_epoch"] == 1 and "val/loss" in summary["final_metrics"]
    assert summary["best_metrics"]["val/loss"] <= summary["final_metrics"]["val/loss"] + 1e-9
    assert summary["test_metrics"]["test/auroc"] == result["metrics"]["test/auroc"]  # 4 test subjects
    assert summary["checkpoints"]["last"] == "checkpoints/last.ckpt"  # relative: the folder can move
    assert (run_dir / summary["checkpoints"]["best"]).exists() and (run_dir / summary["checkpoints"]["last"]).exists()
    sizes = summary["split_sizes"]
    assert sum(s["subjects"] for s in sizes.values()) == 16 and sizes["test"]["clips"] > 0
    assert summary["wall_time_s"] > 0 and summary["versions"]["torch"]
    assert (run_dir / "training_curves.png").stat().st_size > 1000


def test_roc_names_the_positive_class_and_shows_acc():
    table = SubjectTable(["a", "b", "c", "d"], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]]),
                         np.array([0, 1, 0, 1]), np.array([2, 2, 2, 2]))
    text = _texts(roc_figure(table, ["F", "M"]))
    assert "positive class: M" in text and "ACC 1.000" in text and "balanced ACC 1.000" in text
    assert "AUC 1.000" in text


def test_roc_curve_and_metric_follow_one_rule():
    """The figure said "no curve ... needs 2 of each" while summary.json reported AUROC 1.0:
    now a curve is drawn exactly where the metric is defined, with the metric's value."""
    from neuromamba.training.metrics import classification_metrics

    table = SubjectTable(["a", "b", "c"], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]),
                         np.array([0, 1, 0]), np.array([1, 1, 1]))
    assert classification_metrics(table.outputs, table.targets)["auroc"] == 1.0
    text = _texts(roc_figure(table, ["F", "M"]))
    assert "AUC 1.000 (1 pos., 2 neg.)" in text and "no curve" not in text
    one_class = SubjectTable(["a", "c"], np.array([[0.8, 0.2], [0.6, 0.4]]), np.array([0, 0]),
                             np.array([1, 1]))
    assert np.isnan(classification_metrics(one_class.outputs, one_class.targets)["auroc"])
    assert "no curve for 'M': 0 positive and 2 negative subjects; AUROC is undefined (nan)" in \
        _texts(roc_figure(one_class, ["F", "M"]))


def test_scatter_names_target_and_unit_and_shows_mae_and_r():
    table = SubjectTable(["a", "b", "c"], np.array([[0.0], [1.0], [-1.0]]), np.array([0.5, 1.0, -1.0]),
                         np.array([1, 1, 1]))
    text = _texts(scatter_figure(table, 40.0, 10.0, "age", "years"))
    assert "true age (years)" in text and "predicted age (years)" in text
    assert "MAE 1.67 years" in text and "Pearson r" in text


def test_regression_predictions_have_sensible_precision():
    table = SubjectTable(["a"], np.array([[0.79999999440018]]), np.array([0.8]), np.array([3]))
    _, rows = predictions_rows(table, "regression", target_mean=50.0, target_std=10.0)
    assert rows[0][2] == 58.0 and rows[0][3] == 58.0 and str(rows[0][3]) == "58.0"


def test_every_png_the_project_writes_has_labelled_axes(tmp_path, monkeypatch):
    """ROC, scatter and training curves: every plotting axes names both axes (the attribution
    PNG's colourbar label is checked in tests/analysis/test_attribution.py)."""
    from neuromamba.training import outputs

    table = SubjectTable(["a", "b", "c", "d"], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]]),
                         np.array([0, 1, 0, 1]), np.array([2, 2, 2, 2]))
    regression = SubjectTable(["a", "b", "c"], np.array([[0.0], [1.0], [-1.0]]), np.array([0.5, 1.0, -1.0]),
                              np.array([1, 1, 1]))
    figures = [roc_figure(table, ["F", "M"]), scatter_figure(regression, 40.0, 10.0, "age", "years")]
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss_epoch,val/loss,val/auroc\n"
                                          "0,4,0.7,0.69,0.5\n1,8,0.6,0.65,0.75\n")
    monkeypatch.setattr(outputs, "_save_figure", lambda fig, path: figures.append(fig))
    outputs.plot_training_curves(tmp_path / "curves.png", tmp_path / "metrics.csv", "val/auroc")
    assert len(figures) == 3
    for fig in figures:
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
