"""Preprocessing as a job array: N shards write exactly what one process writes, reruns skip
finished runs, and `preprocess.py check` summarises the whole folder and its shards."""
import os
import sys
from pathlib import Path

import pytest

from data_helpers import brain_run, save_nifti
from neuromamba.commands.preprocess import main as preprocess
from neuromamba.data.shards import Shard, parse_shard, resolve_shard, shard_from_slurm
from process_helpers import run_process_group

ROOT = Path(__file__).resolve().parents[2]
ARRAY_SCRIPT = ROOT / "sample_scripts" / "preprocessing" / "preprocess_array.slurm"
FLAGS = ["--target_shape", "24", "24", "24", "--min_frames", "4", "--no_progress"]


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "nifti"
    folder.mkdir()
    for i in range(7):
        save_nifti(folder / f"sub-{i:02d}_task-rest_bold.nii.gz", brain_run(i))
    return folder


def _h5_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.h5"))}


class _Job:
    def __init__(self, subject, run):
        self.subject, self.run = subject, run


def test_shards_are_disjoint_and_cover_every_run():
    jobs = [_Job(f"sub-{i:04d}", f"run-{r}") for i in range(500) for r in (1, 2)]
    shares = [Shard(i, 7).select(jobs) for i in range(1, 8)]
    names = [(j.subject, j.run) for share in shares for j in share]
    assert sorted(names) == sorted((j.subject, j.run) for j in jobs)  # each run exactly once
    assert min(map(len, shares)) > 100  # roughly even (1000 / 7 ~ 143)
    # a run's share does not depend on the other runs listed with it
    assert Shard(3, 7).select(jobs[:10]) == [j for j in shares[2] if j in jobs[:10]]


def test_shard_from_the_flag_or_the_slurm_array():
    assert parse_shard("3/10") == Shard(3, 10)
    for bad in ("0/4", "5/4", "3", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    array = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "100", "SLURM_ARRAY_TASK_MIN": "0"}
    assert shard_from_slurm(array) == Shard(1, 100, "SLURM_ARRAY_TASK_ID")
    one_based = {"SLURM_ARRAY_TASK_ID": "100", "SLURM_ARRAY_TASK_COUNT": "100", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_slurm(one_based).index == 100
    stepped = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "5",
               "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2"}
    assert shard_from_slurm(stepped) == Shard(4, 5, "SLURM_ARRAY_TASK_ID")
    assert shard_from_slurm({}) is None and resolve_shard(None, {}) is None
    assert resolve_shard("2/3", array) == Shard(2, 3)  # the flag wins over the environment
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_COUNT"):
        shard_from_slurm({"SLURM_ARRAY_TASK_ID": "3"})


def test_array_tasks_write_byte_for_byte_what_one_process_writes(tmp_path, cohort, capsys):
    single = tmp_path / "single"
    assert preprocess(["nifti", "--input", str(cohort), "--output_dir", str(single), *FLAGS]) == 0
    assert len(_h5_bytes(single)) == 7

    array = tmp_path / "array"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(INPUT=str(cohort), OUTPUT=str(array), PYTHON=sys.executable,
               SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_TASK_MIN="0", SLURM_CPUS_PER_TASK="1")
    for task in ("0", "1", "2"):  # the three tasks of `sbatch --array=0-2`
        res = run_process_group(["bash", str(ARRAY_SCRIPT), *FLAGS],
                                env={**env, "SLURM_ARRAY_TASK_ID": task}, cwd=ROOT, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"shard {int(task) + 1}/3 (from SLURM_ARRAY_TASK_ID)" in res.stderr
    assert _h5_bytes(array) == _h5_bytes(single)
    reports = sorted(p.name for p in array.glob("*.csv"))
    assert reports == [f"preprocess_report.shard-{i}-of-3.csv" for i in (1, 2, 3)]

    capsys.readouterr()
    assert preprocess(["check", str(array), "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "checked 7 files: 7 good, 0 bad; 7 subjects, 7 runs, 42 frames" in out
    assert "3 of 3 shards reported" in out

    # a rerun of one task skips its finished runs and changes nothing
    assert preprocess(["nifti", "--input", str(cohort), "--output_dir", str(array), "--shard", "2/3",
                       *FLAGS]) == 0
    line = capsys.readouterr().out
    share = len(Shard(2, 3).select([_Job(f"sub-{i:02d}", "task-rest_bold") for i in range(7)]))
    assert f"shard 2/3 ({share} of 7 runs): done 0, skipped {share}, failed 0" in line
    assert _h5_bytes(array) == _h5_bytes(single)


def test_check_names_a_shard_that_never_reported_and_a_run_that_failed(tmp_path, cohort, capsys):
    out = tmp_path / "h5"
    bad = cohort / "sub-99_task-rest_bold.nii.gz"
    bad.write_bytes(b"not a nifti")
    shard_of_bad = next(i for i in (1, 2, 3) if Shard(i, 3).owns("sub-99", "task-rest_bold"))
    assert preprocess(["nifti", "--input", str(cohort), "--output_dir", str(out),
                       "--shard", f"{shard_of_bad}/3", *FLAGS]) == 1
    capsys.readouterr()
    assert preprocess(["check", str(out), "--no_progress"]) == 1
    captured = capsys.readouterr()
    missing = [f"{i}/3" for i in (1, 2, 3) if i != shard_of_bad]
    assert f"1 of 3 shards reported; no report from shard {', '.join(missing)}" in captured.out
    assert "1 run(s) failed and are still missing" in captured.out
    assert "FAILED sub-99/task-rest_bold:" in captured.err


def test_dry_run_lists_the_share_and_writes_nothing(tmp_path, cohort, capsys):
    out = tmp_path / "h5"
    assert preprocess(["nifti", "--input", str(cohort), "--output_dir", str(out), "--shard", "1/2",
                       "--dry_run", *FLAGS]) == 0
    text = capsys.readouterr().out
    share = Shard(1, 2).select([_Job(f"sub-{i:02d}", "task-rest_bold") for i in range(7)])
    assert f"dry run: shard 1/2 (from --shard): would convert {len(share)} of 7 runs" in text
    assert all(f"{j.subject}/{j.run}" in text for j in share)
    assert not out.exists()
