"""Re-identification metrics: exact values on hand-made embeddings, planted subject pattern."""
import numpy as np
import pytest

from neuromamba.analysis.reid import (
    average_precision,
    cosine_similarity_matrix,
    mean_by_key,
    reidentification_metrics,
)


def test_cosine_similarity_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    sim = cosine_similarity_matrix(a)
    assert sim[0, 1] == pytest.approx(1 / np.sqrt(2))
    assert sim[0, 0] == pytest.approx(1.0)
    assert sim[2].tolist() == [0.0, 0.0, 0.0]


def test_average_precision_by_hand():
    assert average_precision([True, False, True]) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([False, True]) == pytest.approx(0.5)
    assert average_precision([False, False]) == 0.0


def test_metrics_exact_on_small_gallery():
    # Subjects a, b, c with two runs each, on the unit circle at these angles (degrees):
    angles = {"a1": 0, "a2": 10, "b1": 90, "b2": 40, "c1": 180, "c2": 200}
    keys = list(angles)
    emb = np.array([[np.cos(np.radians(v)), np.sin(np.radians(v))] for v in angles.values()])
    subjects = [k[0] for k in keys]
    runs = [k[1] for k in keys]
    m = reidentification_metrics(emb, subjects, runs, topk=(1, 2, 3))
    # a1 -> a2 first; a2 -> a1; b1 -> b2; c1 <-> c2; but b2 (40 deg) ranks a2 (30 deg away),
    # a1 (40), then b1 (50): its match is at rank 3.
    assert m["top1"] == pytest.approx(5 / 6)
    assert m["top2"] == pytest.approx(5 / 6)
    assert m["top3"] == pytest.approx(1.0)
    assert m["mAP"] == pytest.approx((5 * 1.0 + 1 / 3) / 6)
    assert m["chance_top1"] == pytest.approx(1 / 5)
    assert m["num_queries"] == 6 and m["skipped_queries"] == 0


def test_same_run_items_are_excluded_from_the_gallery():
    # Two clips of run 1 of subject a are identical; they must not retrieve each other.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    subjects = ["a", "a", "a", "b"]
    runs = ["1", "1", "2", "1"]
    m = reidentification_metrics(emb, subjects, runs, topk=(1,))
    # a/1 queries see a/2 (cos 0) and b (0.6): miss; a/2 sees a/1 twice (0) and b (0.8): miss.
    assert m["top1"] == 0.0
    assert m["skipped_queries"] == 1  # b has no other item


def test_no_matches_raises():
    with pytest.raises(ValueError, match="at least two runs"):
        reidentification_metrics(np.eye(3), ["a", "b", "c"])


def test_mean_by_key():
    keys, means = mean_by_key(np.array([[1.0, 0], [3.0, 2], [5.0, 5]]), [("s", "1"), ("s", "1"), ("t", "1")])
    assert keys == [("s", "1"), ("t", "1")]
    assert means.tolist() == [[2.0, 1.0], [5.0, 5.0]]


def test_planted_subject_pattern_is_retrieved_well_above_chance():
    rng = np.random.default_rng(0)
    num_subjects, runs, dim = 30, 2, 64
    identity = rng.normal(size=(num_subjects, dim))
    emb, subjects, groups = [], [], []
    for s in range(num_subjects):
        for r in range(runs):
            emb.append(1.2 * identity[s] + rng.normal(size=dim))
            subjects.append(f"sub{s}")
            groups.append(f"run{r}")
    m = reidentification_metrics(np.array(emb), subjects, groups)
    assert m["chance_top1"] == pytest.approx(1 / 59)
    assert m["top1"] > 0.8 and m["top1"] > 20 * m["chance_top1"]
    # Shuffled identities destroy it.
    shuffled = reidentification_metrics(np.array(emb), rng.permutation(subjects), groups)
    assert shuffled["top1"] < 0.2
