"""A cluster job requeued by its scheduler: killed or preempted before its first checkpoint,
then started again with the same command (`--resume_ckpt_path last --run_name NAME`), often on
another node. It died again: 'not a checkpoint', then the lock its killed run left (that case,
with the other lock cases, is in test_run_lock.py)."""

import pytest

from neuromamba.cli import parse_args


@pytest.mark.parametrize("folder_exists", [True, False])
def test_resume_last_without_a_checkpoint_starts_over_with_a_line(tmp_path, folder_exists):
    if folder_exists:  # what the killed job left: its settings, no checkpoint yet
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "args.yaml").write_text("seed: 1\n")
    args = parse_args(["--downstream_task", "sex", "--output_dir", str(tmp_path), "--run_name", "r",
                       "--resume_ckpt_path", "last"])
    assert args.resume_ckpt_path is None
    assert any("holds no checkpoint yet" in line and "starting the run from the beginning" in line
               for line in args._announce)
