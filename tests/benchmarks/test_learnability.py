"""The learnability benchmark: its "best baseline" is chosen without the test set, and a run
that stopped, or is asked for more methods, resumes from its finished runs."""
import json

import pytest

import learnability


def _cohort(val, test):
    return {f"baseline {b}": {"auc": t, "val_auc": v, "train_loss": None}
            for b, v, t in zip(learnability.BASELINES, val, test)}


def test_best_baseline_is_chosen_by_validation_not_test():
    # temporal_mean, temporal_std, fc: fc has the best test AUC, temporal_std the best validation
    cohort = _cohort(val=[0.50, 0.80, 0.60], test=[0.40, 0.55, 0.90])
    best = learnability.best_baseline(cohort, "coupling")
    assert best["chosen"] == "temporal_std" and best["auc"] == 0.55


def test_a_tie_on_validation_goes_to_the_kinds_own_baseline():
    cohort = _cohort(val=[0.70, 0.70, 0.70], test=[0.10, 0.20, 0.30])
    assert learnability.best_baseline(cohort, "static")["chosen"] == "temporal_mean"
    assert learnability.best_baseline(cohort, "coupling")["chosen"] == "fc"
    assert learnability.best_baseline(cohort, "local")["chosen"] == "temporal_std"


def test_no_validation_figures_give_no_best_baseline():
    cohort = _cohort(val=[None, float("nan"), None], test=[0.4, 0.5, 0.6])
    assert learnability.best_baseline(cohort, "local")["auc"] is None


@pytest.mark.slow
def test_a_tiny_cohort_runs_and_a_second_call_reads_its_finished_runs(tmp_path, capsys):
    """The documented command at tiny sizes: one coupling cohort, the connectivity head on the
    frozen pretrained backbone. Asked again, it reads every finished run instead of training."""
    argv = ["--out", str(tmp_path), "--kinds", "coupling", "--seeds", "1", "--subjects", "10", "--frames", "20", "--clip", "4",
            "--epochs", "1", "--methods", "frozen_connectivity"]
    learnability.main(argv)
    cohort = json.loads((tmp_path / "coupling_seed0" / "result.json").read_text())
    runs = tmp_path / "coupling_seed0" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["frozen_connectivity", "pretrain", "scratch_0"]
    head = cohort["tuned + connectivity head: pretrain + frozen backbone"]
    assert 0.0 <= head["auc"] <= 1.0 and head["train_loss"] > 0
    assert {"baseline fc", "best baseline"} <= set(cohort)

    def trained_files():  # the baselines are refitted every time (seconds); training runs are not
        return {p: p.stat().st_mtime for p in runs.rglob("*") if p.is_file() and "baselines" not in p.parts}

    stamps = trained_files()
    first = capsys.readouterr().out
    learnability.main(argv)
    assert trained_files() == stamps
    assert json.loads((tmp_path / "coupling_seed0" / "result.json").read_text()) == cohort
    assert first.splitlines()[0] == capsys.readouterr().out.splitlines()[0]
    # another cohort size in the same folder is refused, not mixed in
    with pytest.raises(SystemExit, match="holds another cohort"):
        learnability.main([*argv, "--subjects", "12"])
