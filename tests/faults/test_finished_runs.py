"""A finished run folder is a record. A second training with the same --output_dir/--run_name
replaced its checkpoints, summary and predictions with exit 0 and no line; a resume of a run
with no epoch left reran its test and rewrote summary.json."""
import yaml

from test_bad_input import run_command  # the in-process runner of every script, shared

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--dataset_name", "Dummy", "--dummy_num_subjects", "8", "--calc_loss_without_background",
        "--downstream_task", "sex", "--max_epochs", "1"]


def _record(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_finished_run_is_never_overwritten_silently(tmp_path):
    code, out = run_command("main", TINY + ["--output_dir", tmp_path, "--run_name", "r"])
    assert code == 0, out[-2000:]
    run_dir = tmp_path / "r"
    before = _record(run_dir)
    assert (run_dir / "summary.json").is_file()

    code, out = run_command("main", TINY + ["--output_dir", tmp_path, "--run_name", "r", "--seed", "7"])
    assert code == 2 and "holds a finished run (summary.json)" in out and "--overwrite_run" in out
    assert "Traceback" not in out and _record(run_dir) == before  # nothing written

    # A resume with no epoch left says so and changes nothing.
    code, out = run_command("main", TINY + ["--output_dir", tmp_path, "--run_name", "r",
                                            "--resume_ckpt_path", "last"])
    assert code == 0 and "nothing to resume with --max_epochs 1, nothing changed" in out
    assert _record(run_dir) == before

    # Asked for explicitly, the run is replaced.
    code, out = run_command("main", TINY + ["--output_dir", tmp_path, "--run_name", "r", "--seed", "7",
                                            "--overwrite_run"])
    assert code == 0, out[-2000:]
    assert yaml.safe_load((run_dir / "args.yaml").read_text())["seed"] == 7  # the new run's
