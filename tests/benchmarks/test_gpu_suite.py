"""The GPU suite, rehearsed on CPU: every section's dry-run (tiny shapes, pure path), the results
files, the flags, and the shell script's install helpers."""
import json
import math
import subprocess
from pathlib import Path

import pytest

import gpu_suite

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_suite.sh"


def _rows(out):
    return json.loads((Path(out) / "results.json").read_text())["rows"]


def test_dry_run_of_the_measuring_sections(tmp_path):
    out = tmp_path / "out"
    code = gpu_suite.main(["--dry-run", "--sections", "mfu,parity,throughput,memory", "--out", str(out),
                           "--work_dir", str(tmp_path / "work")])
    rows = _rows(out)
    assert code == 0 and [r["section"] for r in rows][0] == "parity"  # the suite's order, not the flag's
    parity = [r for r in rows if r["section"] == "parity"]
    assert len(parity) == 2 * 2 * 2 * 4  # layers x packings x precisions x metrics
    fp32 = [r["value"] for r in parity if r["precision"] == "fp32"]
    assert all(v < 1e-4 for v in fp32)  # half the chunk: the same numbers
    through = {(r["case"], r["backend"]): r for r in rows if r["section"] == "throughput"}
    assert sum(r["status"] == "skipped" for r in through.values()) == 3  # fused, without CUDA
    assert all(r["value"] > 0 for r in through.values() if r["backend"] == "pure")
    assert len([r for r in rows if r["section"] == "memory"]) == 6
    mfu = [r for r in rows if r["section"] == "mfu"]
    assert len(mfu) == 2 and all(0 < r["value"] < 100 for r in mfu)
    text = (out / "results.md").read_text()
    assert text.count("\n") == len(rows) + 2 and (out / "results.csv").read_text().count("\n") == len(rows) + 1


@pytest.mark.slow
def test_dry_run_training_pretrains_then_fine_tunes_on_the_checkpoints_input(tmp_path):
    out = tmp_path / "out"
    assert gpu_suite.main(["--dry-run", "--sections", "training", "--out", str(out),
                           "--work_dir", str(tmp_path / "work")]) == 0
    by_metric = {r["metric"]: r for r in _rows(out)}
    assert by_metric["input follows the checkpoint"]["status"] == "pass"
    assert by_metric["master weight dtypes"]["status"] == "pass"
    assert by_metric["val loss last/first"]["value"] < 1


def test_results_rewrite_every_file_after_every_row_and_refuse_bad_statuses(tmp_path):
    results = gpu_suite.Results(tmp_path, {"mode": "test"})
    results.add("s", "c", "m", value=float("nan"), note="a | b")
    assert "a \\| b" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["value"] is None
    results.add("s", "c2", "m", value=2.0, status="fail")
    assert results.failed() == 1 and (tmp_path / "results.csv").read_text().count("\n") == 3
    with pytest.raises(ValueError, match="status"):
        results.add("s", "c", "m", status="maybe")
    assert gpu_suite.checked(float("nan"), 1.0) == "fail" and gpu_suite.checked(0.5, 1.0) == "pass"
    assert gpu_suite.fmt(1.23456e-5) == "1.235e-05" and gpu_suite.fmt(None) == ""


def test_a_failing_case_is_an_error_row_and_the_suite_goes_on(tmp_path):
    ctx = gpu_suite.Context(gpu_suite.DRY, gpu_suite.Results(tmp_path, {}), gpu_suite.torch.device("cpu"), "cpu", "x", tmp_path,
                            True, 1.0)
    ctx.guarded(dict(section="s", case="c"), lambda: math.sqrt(-1))
    (row,) = ctx.results.rows
    assert row["status"] == "error" and "math domain error" in row["note"]


def test_flags(tmp_path):
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(["--sections", "parity,nope"])
    assert gpu_suite.parse_args(["--sections", "mfu,parity"]).sections == ["parity", "mfu"]
    if not gpu_suite.torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--dry-run"):
            gpu_suite.main(["--out", str(tmp_path)])


def test_shell_script_parses_and_lists_only_missing_or_older_wheels(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    whl = tmp_path / ".whl"
    whl.mkdir()
    for name in ("numpy-0.1-py3-none-any.whl", "numpy-999.0-py3-none-any.whl", "nosuchdist-1.0-py3-none-any.whl"):
        (whl / name).write_text("")
    code = f'source "{SCRIPT}"; WHL="{whl}"; PY="{gpu_suite.sys.executable}"; missing_wheels'
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(Path(p).name for p in out) == ["nosuchdist-1.0-py3-none-any.whl", "numpy-999.0-py3-none-any.whl"]
