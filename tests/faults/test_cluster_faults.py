"""Cluster-life faults, as a user meets them: each case checks the exit code, the one-line
message, that no traceback is printed and that nothing already written is lost.

The rest of tests/faults/: bad input of every script (test_bad_input.py), preemption by
SIGTERM and SIGUSR1 with one metrics history (test_preemption.py), one writer per run folder
(test_run_lock.py), masks checked against the run (test_mask_checks.py). Elsewhere, next to the
code they test: placement, resampling crop and registration overlap
(tests/data/test_world_grid.py), BIDS spaces and the sub- entity
(tests/data/test_preprocess_options.py), DDP ranks dying with their launcher
(tests/training/test_signal_and_ddp.py), ZeRO-3 padded evaluation (tests/data/test_ddp.py)."""
import nibabel as nib
import numpy as np
import pytest
import torch

from test_bad_input import run_command  # the in-process runner of every script, shared

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--dataset_name", "Dummy", "--dummy_num_subjects", "8", "--calc_loss_without_background"]


@pytest.mark.parametrize("torch_text", [
    "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: file write failed",
    "[enforce fail at inline_container.cc:778] . unexpected pos 2251328 vs 2251216"])
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch,
                                                                                   torch_text):
    """torch.save reports ENOSPC as a RuntimeError from its C++ writer; the run stops with one
    line naming the checkpoint and the free space, and the earlier last.ckpt still loads."""
    import neuromamba.training.checkpoint_io  # noqa: F401  (the writer whose torch.save fails)

    real_save, calls = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 2:  # the first epoch's best and last checkpoints fit
            raise RuntimeError(torch_text)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    code, out = run_command("main", TINY + ["--downstream_task", "sex", "--max_epochs", "3",
                                      "--output_dir", tmp_path, "--run_name", "r"])
    assert code == 2, out[-2000:]
    assert "Traceback" not in out
    line = [t for t in out.splitlines() if "error:" in t]
    assert len(line) == 1 and "no space left to write the checkpoint" in line[0] and "MiB free" in line[0]
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] > 0  # the earlier one, intact
    assert not [p for p in last.parent.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("recipe", ["paper", "tuned"])
def test_attribute_with_its_defaults_works_on_a_checkpoint_trained_with_defaults(tmp_path, recipe):
    code, out = run_command("main", TINY + ["--recipe", recipe, "--downstream_task", "sex", "--max_epochs", "1",
                                      "--output_dir", tmp_path, "--run_name", "r"])
    assert code == 0, out[-2000:]
    code, out = run_command("attribute", ["--checkpoint", tmp_path / "r", "--dataset_name", "Dummy",
                                   "--dummy_num_subjects", "8", "--subject", "dummy0001",
                                   "--output_dir", tmp_path / "maps"])
    assert code == 0, out[-2000:]
    assert "Traceback" not in out and "memory:" in out
    assert (tmp_path / "maps" / "dummy0001_run0_ig.png").stat().st_size > 1000


def test_resampling_cannot_crop_the_brain_silently(tmp_path):
    """--resample_to 2 of 2x2x4 mm voxels onto a grid smaller than the brain: refused, naming
    the file and the share of the brain that would be cut; nothing written."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = np.zeros((30, 30, 16, 20), np.float32)
    data[3:27, 3:27, 2:14] = 500 + np.random.default_rng(0).normal(size=(24, 24, 12, 20))
    affine = np.diag([2.0, 2, 4, 1])
    affine[:3, 3] = (-30.0, -48.0, -14.0)
    nib.save(nib.Nifti1Image(data, affine), str(folder / "s_rest.nii.gz"))
    code, out = run_command("preprocess", ["nifti", "--input", folder, "--output_dir", tmp_path / "h5",
                                    "--target_shape", 20, 20, 20, "--resample_to", 2, "--no_progress"])
    assert code == 1 and "Traceback" not in out
    assert "s_rest.nii.gz" in out and "% of the brain) fall outside" in out
    assert not list((tmp_path / "h5").rglob("*.h5")) if (tmp_path / "h5").exists() else True
