"""The connectivity head through main.py: built from the run's spec (token grid, static token),
saved and rebuilt from its checkpoint, and refused in one line where clips are too short."""
import json
from pathlib import Path

import pytest
import torch

from test_end_to_end import run_cli


def test_tuned_run_with_the_connectivity_head_saves_and_reloads(tmp_path):
    flags = ["--recipe", "tuned", "--clf_head_version", "connectivity", "--img_size", "24", "24", "24", "4",
             "--downstream_task", "sex", "--dummy_num_subjects", "10", "--batch_size", "2", "--max_epochs", "1"]
    result = run_cli(tmp_path, "conn", *flags)
    head = result["module"].head
    # 4 raw frames (2 time tokens) and the tuned static token on top of them
    assert head.token_grid == (4, 4, 4, 3) and head.static_time_tokens == 1
    ckpt = Path(result["run_dir"]) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert saved["head.pair_scores"].shape == (2, 2 * 64 * 63 // 2)  # 64 parcels, both signs, 2 classes
    summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
    assert summary["spec"]["model"]["clf_head_version"] == "connectivity"
    assert any(d.startswith("clf_head_version connectivity") for d in summary["departures"])
    best = next((Path(result["run_dir"]) / "checkpoints").glob("best-*.ckpt"))
    again = run_cli(tmp_path, "again", *flags, "--test_only", "--test_ckpt_path", str(best))
    assert again["module"].head.static_time_tokens == 1
    for key in ("test/loss", "test/acc"):
        assert again["metrics"][key] == pytest.approx(result["metrics"][key], abs=1e-6)


def test_clips_too_short_for_a_time_course_are_refused_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"--clf_head_version connectivity with --img_size 24 24 24 2 "
                                         r"--patch_size 6 6 6 2: .*needs >= 2 time tokens of "
                                         r"fluctuations per patch; token grid \(4, 4, 4, 2\) with 1 static"):
        run_cli(tmp_path, "short", "--recipe", "tuned", "--clf_head_version", "connectivity",
                "--img_size", "24", "24", "24", "2",
                "--downstream_task", "sex", "--dummy_num_subjects", "6", "--max_epochs", "1")
