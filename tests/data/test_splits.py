"""Subject splits: disjoint, seeded, stable across processes, saved and reused."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuromamba.data.splits import (make_split, read_split_file, resolve_split, split_sizes,
                                    write_split_file)

SUBJECTS = [f"{100000 + 7 * i}" for i in range(50)]
REPO = Path(__file__).resolve().parents[2]


def test_disjoint_complete_and_sized():
    split = make_split(SUBJECTS, 0.8, 0.1, seed=1)
    sets = {k: set(v) for k, v in split.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert sets["train"] | sets["val"] | sets["test"] == set(SUBJECTS)
    assert [len(split[k]) for k in ("train", "val", "test")] == [40, 5, 5]
    assert split["val"] != split["test"]


def test_deterministic_for_a_seed_and_different_for_another():
    assert make_split(SUBJECTS, seed=3) == make_split(list(reversed(SUBJECTS)), seed=3)
    assert make_split(SUBJECTS, seed=3) != make_split(SUBJECTS, seed=4)


def test_global_rng_is_neither_used_nor_touched():
    np.random.seed(0)
    a = make_split(SUBJECTS, seed=5)
    state = np.random.get_state()[1].copy()
    np.random.seed(99)
    b = make_split(SUBJECTS, seed=5)
    assert a == b
    np.random.seed(0)
    make_split(SUBJECTS, seed=5)
    assert np.array_equal(np.random.get_state()[1], state)


def test_stable_across_processes():
    code = ("import sys; "
            "from neuromamba.data.splits import make_split; "
            f"print(make_split({SUBJECTS!r}, seed=11))")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": str(h), "PATH": ""}).stdout
            for h in (1, 2)}
    assert len(outs) == 1
    assert outs.pop().strip() == str(make_split(SUBJECTS, seed=11))


def test_small_cohorts_keep_val_and_test_non_empty_and_distinct():
    for n in range(3, 12):
        split = make_split([f"s{i}" for i in range(n)], seed=0)
        assert split["val"] and split["test"] and split["train"]
        assert set(split["val"]).isdisjoint(split["test"])
    with pytest.raises(ValueError, match="at least 3 subjects"):
        make_split(["a", "b"])
    with pytest.raises(ValueError, match="--train_split 0.9 and --val_split 0.2"):
        split_sizes(10, 0.9, 0.2)


def test_split_file_format_and_reuse(tmp_path):
    split, path = resolve_split(SUBJECTS, seed=2, output_dir=tmp_path, dataset_name="HCP")
    lines = path.read_text().splitlines()
    assert lines[0] == "train_subjects" and lines[41] == "val_subjects"
    assert lines[47] == "test_subjects" and len(lines) == 53
    assert read_split_file(path) == split
    # reused when present: a different seed would give another split, but the file wins
    write_split_file(path, {"train": SUBJECTS[:45], "val": SUBJECTS[45:48], "test": SUBJECTS[48:]})
    again, _ = resolve_split(SUBJECTS, seed=2, output_dir=tmp_path, dataset_name="HCP")
    assert again["test"] == SUBJECTS[48:]


def test_given_split_file_with_unknown_subjects_is_an_error(tmp_path):
    path = write_split_file(tmp_path / "s.txt", {"train": ["a", "b"], "val": ["c"], "test": ["zz"]})
    with pytest.raises(ValueError, match=r"1 subject ids are not in the data.*zz"):
        resolve_split(["a", "b", "c", "d"], split_file=path)
    split, used = resolve_split(["a", "b", "c", "zz"], split_file=path)
    assert used == path and split["test"] == ["zz"]


def test_split_file_with_a_subject_twice_is_an_error(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("train_subjects\na\nb\nval_subjects\nb\ntest_subjects\nc\n")
    with pytest.raises(ValueError, match="'b' is in both train and val"):
        read_split_file(path)


def test_other_ranks_wait_for_rank0_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TimeoutError, match="rank 0"):
        resolve_split(SUBJECTS, output_dir=tmp_path, dataset_name="X", wait_timeout_s=0.3)
    monkeypatch.setenv("RANK", "0")
    expected, _ = resolve_split(SUBJECTS, output_dir=tmp_path, dataset_name="X")
    monkeypatch.setenv("RANK", "1")
    assert resolve_split(SUBJECTS, output_dir=tmp_path, dataset_name="X")[0] == expected
