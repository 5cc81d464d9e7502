"""Bad inputs give clear errors and never stop the good ones; a killed preprocessing run
resumes to the same files as an uninterrupted one."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from data_helpers import brain_run, save_nifti
from neuromamba.data.check import check_folder
from neuromamba.data.datasets import discover_hdf5_runs
from neuromamba.data.preprocess_runner import PreprocessOptions, preprocess_folder

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(REPO / "project" / "preprocess.py")]
OPTS = PreprocessOptions(target_shape=(24, 24, 24), min_frames=4)


def _bad_inputs(folder: Path) -> dict:
    good = save_nifti(folder / "good_rest.nii.gz", brain_run(0))
    truncated = folder / "trunc_rest.nii.gz"
    save_nifti(truncated, brain_run(1))
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    save_nifti(folder / "flat_rest.nii.gz", brain_run(2)[..., 0])  # 3D
    nan = brain_run(3)
    nan[10, 10, 10, 2] = np.nan
    save_nifti(folder / "nan_rest.nii.gz", nan)
    save_nifti(folder / "short_rest.nii.gz", brain_run(4)[..., :2])
    save_nifti(folder / "huge_rest.nii.gz", brain_run(5), voxel=50.0)
    return {"good": good}


@pytest.mark.parametrize("subject, pattern", [
    ("trunc", r"trunc_rest\.nii\.gz: cannot read voxel data, file truncated or corrupt"),
    ("flat", r"flat_rest\.nii\.gz: expected a 4D \(X, Y, Z, T\) image, got 3D"),
    ("nan", r"nan_rest\.nii\.gz: 1 non-finite voxel values"),
    ("short", r"short_rest\.nii\.gz: 2 frames, fewer than the required 4"),
    ("huge", r"huge_rest\.nii\.gz: implausible voxel size"),
])
def test_each_bad_file_gets_one_clear_line(tmp_path, subject, pattern):
    import re

    _bad_inputs(tmp_path)
    summary = preprocess_folder(tmp_path, tmp_path / "out", OPTS, progress=False)
    by_subject = {r.job.subject: r for r in summary.results}
    assert by_subject["good"].status == "done"  # the good run went through
    bad = by_subject[subject]
    assert bad.status == "failed" and "\n" not in bad.message
    assert re.search(pattern, bad.message), bad.message
    assert not (tmp_path / "out" / subject).exists() or not list((tmp_path / "out" / subject).iterdir())


def test_cli_exit_code_and_report(tmp_path):
    _bad_inputs(tmp_path)
    proc = subprocess.run(CLI + ["nifti", "--input", str(tmp_path), "--output_dir",
                                 str(tmp_path / "out"), "--target_shape", "24", "24", "24",
                                 "--min_frames", "4", "--no_progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    failed_lines = [l for l in proc.stderr.splitlines() if l.startswith("FAILED")]
    assert len(failed_lines) == 5
    assert "done 1, skipped 0, failed 5" in proc.stdout
    report = (tmp_path / "out" / "preprocess_report.csv").read_text()
    assert report.count(",failed,") == 5 and report.count(",done,") == 1
    # usage errors are one line and exit code 2
    proc = subprocess.run(CLI + ["nifti", "--input", str(tmp_path / "missing"), "--output_dir",
                                 str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "no such file or folder" in proc.stderr


def test_unreadable_hdf5_is_reported_and_removed(tmp_path):
    (tmp_path / "nifti").mkdir()
    save_nifti(tmp_path / "nifti" / "a_rest.nii.gz", brain_run(0))
    save_nifti(tmp_path / "nifti" / "b_rest.nii.gz", brain_run(1, integer=False))  # float16
    out = tmp_path / "h5"
    preprocess_folder(tmp_path / "nifti", out, OPTS, progress=False)
    garbage = out / "c" / "rest.h5"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not an hdf5 file at all")
    nan_file = out / "b" / "rest.h5"
    with h5py.File(nan_file, "r+") as f:
        f["fmri"][1, 5, 5, 5] = np.nan
    leftover = out / "a" / ("rest.h5.tmp-12345")
    leftover.write_bytes(b"partial")
    # the dataset refuses the folder with a clear message naming the file and the fix
    with pytest.raises(ValueError, match=r"bad HDF5 run.*c/rest\.h5: OSError.*preprocess\.py check"):
        discover_hdf5_runs(out)
    bad = {Path(r.path).relative_to(out).as_posix(): r.message for r in check_folder(out, progress=False)}
    assert set(bad) == {"c/rest.h5", "b/rest.h5", "a/rest.h5.tmp-12345"}
    assert "non-finite values in frame 1" in bad["b/rest.h5"]
    assert "temporary file" in bad["a/rest.h5.tmp-12345"]
    proc = subprocess.run(CLI + ["check", str(out), "--no_progress"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("BAD ") == 3
    proc = subprocess.run(CLI + ["check", str(out), "--remove", "--no_progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.count("REMOVED ") == 3
    assert [e.subject for e in discover_hdf5_runs(out)] == ["a"]


def _make_many_runs(folder: Path, n: int = 10, frames: int = 30) -> None:
    folder.mkdir()
    for i in range(n):
        save_nifti(folder / f"s{i:02d}_rest.nii.gz", brain_run(i, shape=(30, 34, 28, frames)))


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.h5"))}


def test_killed_run_resumes_to_identical_files(tmp_path):
    inputs = tmp_path / "nifti"
    _make_many_runs(inputs)
    args = ["nifti", "--input", str(inputs), "--target_shape", "24", "24", "24",
            "--min_frames", "4", "--compression", "gzip", "--no_progress"]
    reference = tmp_path / "reference"
    subprocess.run(CLI + args + ["--output_dir", str(reference)], check=True, timeout=300,
                   capture_output=True)

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(CLI + args + ["--output_dir", str(resumed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(resumed.rglob("*.h5")) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = list(resumed.rglob("*.h5"))
    assert 1 <= len(finished) < 10, "the kill should land mid-way"
    for path in finished:  # atomic writes: every visible file is complete
        with h5py.File(path, "r") as f:
            assert f.attrs["complete"]
    # a stray partial file (e.g. a copy cut short) is redone, not skipped
    partial = resumed / "s09" / "rest.h5"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"partial")
    rerun = subprocess.run(CLI + args + ["--output_dir", str(resumed)], capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(finished)}" in rerun.stdout
    assert _files(resumed) == _files(reference)
    assert not [p for p in resumed.rglob("*") if ".tmp-" in p.name]


def test_check_remove_never_deletes_a_file_another_process_has_open(tmp_path, nifti_folder):
    """A file locked by a writer is reported busy, not corrupt, and is not removed."""
    import subprocess
    import sys

    from neuromamba.data.check import check_folder

    out = tmp_path / "h5"
    preprocess_folder(nifti_folder, out, PreprocessOptions(target_shape=(24, 24, 24), min_frames=4),
                      progress=False)
    locked = out / "sub-02" / "rest.h5"
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, time; f = h5py.File({str(locked)!r}, 'a'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        bad = check_folder(out, remove=True, progress=False)
        assert [(Path(r.path).name, r.busy) for r in bad] == [("rest.h5", True)]
        assert "busy" in bad[0].message and locked.exists()
    finally:
        holder.kill()
        holder.wait()


def test_two_preprocessing_processes_share_one_output_folder(tmp_path, nifti_folder):
    """A run another process is writing is left to it (reported busy, its temporary untouched);
    two real processes on one folder both finish cleanly and every run is complete."""
    from neuromamba.data.store import is_complete

    out = tmp_path / "h5"
    (out / "sub-02").mkdir(parents=True)
    lock = out / ".locks" / "sub-02" / "rest.lock"
    lock.parent.mkdir(parents=True)
    partial = out / "sub-02" / "rest.h5.tmp-99999-abcd"
    partial.write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", f"import fcntl, time; f = open({str(lock)!r}, 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        summary = preprocess_folder(nifti_folder, out, PreprocessOptions(target_shape=(24, 24, 24), min_frames=4),
                                    progress=False)
        assert summary.count("busy") == 1 and summary.count("done") == 2 and not summary.failed
        assert partial.exists()  # another writer's temporary is not "stale"
        assert "busy 1" in summary.line(out)
    finally:
        holder.kill()
        holder.wait()
    partial.unlink()

    both = tmp_path / "both"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "project" / "preprocess.py"), "nifti",
           "--input", str(nifti_folder), "--output_dir", str(both), "--target_shape", "24", "24", "24",
           "--min_frames", "4", "--no_progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), results
    runs = sorted(both.glob("*/*.h5"))
    assert len(runs) == 3 and all(is_complete(r) for r in runs)
    assert not list(both.rglob("*.tmp-*"))


def _children(pid: int) -> list:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children")
        if children.exists():
            found += [int(c) for c in children.read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _start_slow_preprocessing(tmp_path, workers: int):
    inputs = tmp_path / "nifti"
    _make_many_runs(inputs, 24, frames=120)  # enough work that the signal lands mid-way
    out = tmp_path / "out"
    proc = subprocess.Popen(CLI + ["nifti", "--input", str(inputs), "--output_dir", str(out), "--target_shape",
                                   "24", "24", "24", "--min_frames", "4", "--compression", "gzip", "--no_progress",
                                   "--num_workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.h5")) and time.monotonic() < deadline:
        time.sleep(0.005)
    return proc, out


def _default_sigint():
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_preprocessing_with_one_line(tmp_path):
    proc, out = _start_slow_preprocessing(tmp_path, 2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Rerun the same command" in lines[0], stderr
    assert "Traceback" not in stderr
    assert len(list(out.rglob("*.h5"))) < 24  # it stopped, it did not convert the queue


def test_workers_die_with_a_killed_parent(tmp_path):
    proc, _ = _start_slow_preprocessing(tmp_path, 2)
    workers = _children(proc.pid)
    assert workers, "the pool should have started workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
