"""The learnability benchmark: its "best baseline" is chosen without the test set, and a run
that stopped, or is asked for more methods, resumes from its finished runs."""
import json

import pytest

import learnability


def _cohort(val, test):
    return {f"baseline {b}": {"auc": t, "val_auc": v, "train_loss": None}
            for b, v, t in zip(learnability.BASELINES, val, test)}


def test_best_baseline_is_chosen_by_validation_not_test():
    # temporal_mean, temporal_std, fc, voxel_mean: fc has the best test AUC, temporal_std the best validation
    cohort = _cohort(val=[0.50, 0.80, 0.60, 0.70], test=[0.40, 0.55, 0.90, 0.60])
    best = learnability.best_baseline(cohort, "coupling")
    assert best["chosen"] == "temporal_std" and best["auc"] == 0.55


def test_a_tie_on_validation_goes_to_the_kinds_own_baseline():
    cohort = _cohort(val=[0.70] * 6, test=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert learnability.best_baseline(cohort, "static")["chosen"] == "voxel_mean"
    assert learnability.best_baseline(cohort, "coupling")["chosen"] == "fc_screened"
    assert learnability.best_baseline(cohort, "local")["chosen"] == "voxel_std"


def test_no_validation_figures_give_no_best_baseline():
    cohort = _cohort(val=[None, float("nan"), None], test=[0.4, 0.5, 0.6])
    assert learnability.best_baseline(cohort, "local")["auc"] is None


def test_splits_are_stratified_by_label_and_fresh_seeds_are_the_default():
    labels = [i % 2 for i in range(100)]
    split = learnability.stratified_split(labels, seed=100)
    positives = {name: sum(labels[int(s[1:])] for s in ids) for name, ids in split.items()}
    assert {k: len(v) for k, v in split.items()} == {"train": 60, "val": 20, "test": 20}
    assert positives == {"train": 30, "val": 10, "test": 10}
    assert sorted(sum(split.values(), [])) == [f"s{i:03d}" for i in range(100)]
    assert learnability.FIRST_FRESH_SEED >= 3  # seeds 0-2 were used during development


def test_mean_and_standard_error():
    mean, se, n = learnability.mean_and_se([0.5, 0.7, 0.9, None])
    assert (round(mean, 6), round(se, 6), n) == (0.7, round(0.2 / 3 ** 0.5, 6), 3)
    assert learnability.mean_and_se([0.6])[1] is None


@pytest.mark.slow
def test_a_tiny_cohort_runs_and_a_second_call_reads_its_finished_runs(tmp_path, capsys):
    """The documented command at tiny sizes: one coupling cohort, the two-command tuned protocol.
    Asked again, it reads every finished run instead of training."""
    argv = ["--out", str(tmp_path), "--kinds", "coupling", "--seeds", "1", "--first_seed", "100",
            "--subjects", "10", "--frames", "20", "--clip", "4", "--epochs", "1", "--methods", "tuned_two_command"]
    learnability.main(argv)
    cohort = json.loads((tmp_path / "coupling_seed100" / "result.json").read_text())
    runs = tmp_path / "coupling_seed100" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["pretrain_tuned", "tuned_two_command"]
    two = cohort[learnability.METHOD_KEYS["tuned_two_command"]]
    assert 0.0 <= two["auc"] <= 1.0 and two["train_loss"] > 0
    assert two["head"] in ("linear", "attention", "connectivity") and two["val_auc"] is not None
    assert {"baseline fc_screened", "best baseline"} <= set(cohort)
    args = json.loads(json.dumps(__import__("yaml").safe_load((runs / "tuned_two_command" / "args.yaml").read_text())))
    assert args["clf_head_version"] == "auto" and args["freeze_feature_extractor"]
    assert args["split_file"] == str(tmp_path / "coupling_seed100" / "split.txt")

    def trained_files():  # the baselines are refitted every time (seconds); training runs are not
        return {p: p.stat().st_mtime for p in runs.rglob("*") if p.is_file() and "baselines" not in p.parts}

    stamps = trained_files()
    first = capsys.readouterr().out
    learnability.main(argv)
    assert trained_files() == stamps
    assert json.loads((tmp_path / "coupling_seed100" / "result.json").read_text()) == cohort
    assert first.splitlines()[0] == capsys.readouterr().out.splitlines()[0]
    # another cohort size in the same folder is refused, not mixed in
    with pytest.raises(SystemExit, match="holds another cohort"):
        learnability.main([*argv, "--subjects", "12"])
