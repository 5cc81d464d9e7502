"""Linear probes: planted signals are found, shuffled labels score at chance, folds are grouped."""
import numpy as np
import pytest

from neuromamba.analysis.probes import _folds, infer_task, probe_table, run_probe


def _planted(num_subjects=60, clips=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, num_subjects)
    age = rng.uniform(20, 80, num_subjects)
    X, groups, y_sex, y_age = [], [], [], []
    for s in range(num_subjects):
        for _ in range(clips):
            v = rng.normal(size=dim)
            v[0] += 3.0 * (2 * sex[s] - 1)  # sex along axis 0
            v[1] += (age[s] - 50) / 10.0  # age along axis 1
            X.append(v)
            groups.append(f"sub{s}")
            y_sex.append(["F", "M"][sex[s]])
            y_age.append(age[s])
    return np.array(X), groups, y_sex, np.array(y_age)


def test_infer_task():
    assert infer_task(["F", "M", "F"]) == "classification"
    assert infer_task([0, 1, 2, 1]) == "classification"
    assert infer_task(np.linspace(20, 80, 50)) == "regression"


def test_planted_signals_are_probed():
    X, groups, sex, age = _planted()
    rows = probe_table(X, {"sex": sex, "age": age}, groups)
    by = {r["target"]: r for r in rows}
    assert by["sex"]["task"] == "classification" and by["sex"]["accuracy"] > 0.9
    assert by["sex"]["auroc"] > 0.95 and by["sex"]["subjects"] == 60
    assert by["age"]["task"] == "regression" and by["age"]["r2"] > 0.6
    assert by["age"]["pearson_r"] > 0.8


def test_shuffled_labels_are_at_chance():
    X, groups, sex, age = _planted()
    rng = np.random.default_rng(1)
    # Shuffle labels per subject (keep them constant within a subject).
    subjects = sorted(set(groups))
    perm = dict(zip(subjects, rng.permutation(subjects)))
    lookup = dict(zip(groups, sex))
    shuffled = [lookup[perm[g]] for g in groups]
    result = run_probe(X, shuffled, groups)
    assert result["accuracy"] < 0.7


def test_folds_never_split_a_subject():
    groups = np.repeat([f"s{i}" for i in range(10)], 3)
    for train, test in _folds(groups, 5, seed=0):
        assert not set(groups[train]) & set(groups[test])


def test_missing_values_are_dropped_and_bad_input_raises():
    X, groups, sex, age = _planted(num_subjects=20)
    age = age.astype(object)
    age[:6] = np.nan
    assert run_probe(X, age, groups)["n"] == len(age) - 6
    with pytest.raises(ValueError, match="at least 2 subjects"):
        run_probe(X[:3], [0, 1, 0], ["a", "a", "a"], task="classification")
    with pytest.raises(ValueError, match="differ in length"):
        run_probe(X, sex[:5], groups)
