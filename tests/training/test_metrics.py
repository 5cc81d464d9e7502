import numpy as np
import pytest
import torch

from neuromamba.training.metrics import (ClipRecords, aggregate_by_subject, classification_metrics,
                                         regression_metrics)


def test_subject_average_and_duplicate_clips_dropped():
    rec = ClipRecords()
    rec.add(["a", "a", "b"], ["r1", "r1", "r1"], torch.tensor([0, 10, 0]),
            torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]), torch.tensor([1, 1, 0]))
    # a DistributedSampler pad repeats clip (a, r1, 0): it must not count twice
    rec.add(["a"], ["r1"], torch.tensor([0]), torch.tensor([[0.2, 0.8]]), torch.tensor([1]))
    table = aggregate_by_subject(rec)
    assert table.subjects == ["a", "b"]
    np.testing.assert_allclose(table.outputs, [[0.4, 0.6], [0.9, 0.1]], atol=1e-7)
    assert table.num_clips.tolist() == [2, 1]
    assert table.targets.tolist() == [1, 0]


def test_inconsistent_subject_targets_raise():
    rec = ClipRecords()
    rec.add(["a", "a"], ["r", "r"], torch.tensor([0, 1]), torch.ones(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="different targets"):
        aggregate_by_subject(rec)


def test_binary_classification_metrics():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.2, 0.8]])
    y = np.array([0, 1, 1, 0, 1])
    m = classification_metrics(probs, y)
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["balanced_acc"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # pairs (pos, neg): positives .4 .7 .8 vs negatives .1 .55 -> 5 of 6 ordered correctly
    assert m["auroc"] == pytest.approx(5 / 6)


def test_multiclass_macro_and_per_class_auroc():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2],
                      [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    y = np.array([0, 1, 2, 1, 1, 2])
    m = classification_metrics(probs, y)
    assert m["auroc_class0"] == pytest.approx(1.0)
    assert m["auroc"] == pytest.approx(np.mean([m["auroc_class0"], m["auroc_class1"], m["auroc_class2"]]))
    assert m["acc"] == pytest.approx(5 / 6)
    assert m["balanced_acc"] == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_auroc_undefined_with_one_class():
    m = classification_metrics(np.array([[0.3, 0.7], [0.4, 0.6]]), np.array([1, 1]))
    assert np.isnan(m["auroc"]) and m["acc"] == 1.0


def test_regression_metrics_in_both_units():
    pred = np.array([0.0, 1.0, 2.0])
    target = np.array([0.5, 1.0, 1.5])
    m = regression_metrics(pred, target, mean=30.0, std=4.0)
    assert m["mse"] == pytest.approx((0.25 + 0 + 0.25) / 3)
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["mse_orig"] == pytest.approx(m["mse"] * 16)
    assert m["mae_orig"] == pytest.approx(m["mae"] * 4)
    assert m["pearson_r"] == pytest.approx(1.0)
