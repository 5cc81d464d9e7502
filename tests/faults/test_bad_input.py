"""Bad input, table-driven: every case names the command, the input, the expected exit code and
a fragment of the one-line message. No traceback, no silent success, nothing half-written."""
import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

from analysis_helpers import save_lightning_like, tiny_module  # noqa: E402
from data_helpers import ORIGIN_MM, brain_run  # noqa: E402

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar"]


class Pickled:  # not a tensor type: torch.load(weights_only=True) refuses it
    pass


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_bad_{name}", ROOT / "project" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_command(name, argv):
    """(exit code, stdout + stderr) of project/<name>.py run in-process."""
    module = _script(name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            if name in ("main", "preprocess"):
                code = module.main([str(a) for a in argv])
            else:
                code = module.run([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue()


def _nifti(path, data, affine=None, dtype=None):
    if affine is None:
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        affine[:3, 3] = ORIGIN_MM
    img = nib.Nifti1Image(np.asarray(data), affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A small world of inputs the cases refer to by name."""
    root = tmp_path_factory.mktemp("bad")
    f = {"root": root}
    f["file"] = root / "a_file"
    f["file"].write_text("not a folder")
    for name, data, extra in [
        ("complex", brain_run(1).astype(np.complex64) * (1 + 1j), {}),
        ("constant", np.where(brain_run(1) != 0, 500.0, 0.0).astype(np.float32), {}),
        ("good", brain_run(1), {}),
    ]:
        folder = root / name
        folder.mkdir()
        _nifti(folder / "s1_rest.nii.gz", data, **extra)
    zero = root / "zerozoom"  # a header voxel width of 0 beside a valid affine
    zero.mkdir()
    path = _nifti(zero / "s1_rest.nii", brain_run(1))
    raw = bytearray(path.read_bytes())
    raw[84:88] = np.float32(0.0).tobytes()  # pixdim[2]: the y voxel width
    path.write_bytes(bytes(raw))
    loop = root / "loop"
    loop.mkdir()
    os.symlink(loop / "b_rest.nii.gz", loop / "a_rest.nii.gz")
    os.symlink(loop / "a_rest.nii.gz", loop / "b_rest.nii.gz")
    # labels
    (root / "empty.csv").write_text("subject,sex\n")
    (root / "latin1.csv").write_bytes("subject,sex\ndummy0000,m\u00e4nnlich\n".encode("latin-1"))
    # checkpoints
    f["random"] = root / "random.ckpt"
    f["random"].write_bytes(os.urandom(4096))
    f["pickle"] = root / "pickle.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}, "obj": Pickled()}, f["pickle"])
    f["regression"] = save_lightning_like(tiny_module("regression"), root / "regression.ckpt")
    f["pretrain"] = save_lightning_like(tiny_module("pretraining"), root / "pretrain.ckpt")
    return f


def _dup_csv(root):
    path = root / "dup.csv"
    rows = ["subject,sex"] + [f"dummy{i:04d},{'MF'[i % 2]}" for i in range(20)] + ["dummy0003,M"]
    path.write_text("\n".join(rows) + "\n")
    return path


def _h5(root):
    """A tiny preprocessed dataset (24^3) with a label table."""
    out = root / "h5"
    if not out.exists():
        from neuromamba.data.dummy import DummySpec, write_dummy_runs

        write_dummy_runs(out, DummySpec(num_subjects=10, img_size=(24, 24, 24), num_frames=8))
    return out


def _nan_h5(root):
    """A copy of the tiny dataset whose runs have one NaN voxel in a middle frame."""
    import shutil

    import h5py

    out = root / "h5nan"
    if not out.exists():
        shutil.copytree(_h5(root), out)
        for path in out.glob("*/*.h5"):
            with h5py.File(path, "a") as f:
                f["fmri"][3, 12, 12, 12] = np.nan
    return out


def _nostats_h5(root):
    import shutil

    import h5py

    out = root / "h5nostats"
    if not out.exists():
        shutil.copytree(_h5(root), out)
        with h5py.File(next(out.glob("*/*.h5")), "a") as f:
            del f.attrs["stats_std"]
    return out


CASES = [
    # --- preprocess.py ---------------------------------------------------------------------
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "good", "--output_dir", w["file"]], 2,
     "a_file"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "good", "--output_dir", w["root"] / "o1",
                              "--subject_regex", "("], 2, "not a valid regular expression"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "good", "--output_dir", w["root"] / "o2",
                              "--resample_to", "-2"], 2, "--resample_to -2.0: a voxel size in mm between 0.5 and 8"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "good", "--output_dir", w["root"] / "o2b",
                              "--resample_to", "0.1"], 2, "--resample_to 0.1: a voxel size in mm between 0.5 and 8"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "good", "--output_dir", w["root"] / "o3",
                              "--mask", w["root"] / "missing.nii.gz"], 2, "--mask"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "complex", "--output_dir", w["root"] / "o4",
                              "--target_shape", 24, 24, 24, "--min_frames", 4], 1, "complex-valued"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "constant", "--output_dir", w["root"] / "o5",
                              "--target_shape", 24, 24, 24, "--min_frames", 4], 1, "(std 0)"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "zerozoom", "--output_dir", w["root"] / "o6",
                              "--target_shape", 24, 24, 24, "--min_frames", 4], 1, "disagrees with its affine"),
    ("preprocess", lambda w: ["nifti", "--input", w["root"] / "loop", "--output_dir", w["root"] / "o7",
                              "--target_shape", 24, 24, 24, "--min_frames", 4], 1,
     "broken or looping symbolic link"),
    ("preprocess", lambda w: ["check", w["file"]], 2, "not a folder"),
    # --- main.py ---------------------------------------------------------------------------
    ("main", lambda w: TINY + ["--learning_rate", "nan"], 2, "--learning_rate must be a finite number"),
    ("main", lambda w: TINY + ["--seed", "-5"], 2, "--seed must be in [0, 2^32)"),
    ("main", lambda w: TINY + ["--output_dir", w["file"]], 2, "a_file"),
    ("main", lambda w: TINY + ["--strategy", "deepspeed_stage_1", "--accelerator", "auto",
                               "--output_dir", w["root"] / "runs"], 2, "needs a CUDA GPU"),
    ("main", lambda w: TINY + ["--load_model_path", w["random"]], 2, "not a PyTorch checkpoint"),
    ("main", lambda w: TINY + ["--pretraining", "--resume_ckpt_path", w["pickle"], "--output_dir",
                               w["root"] / "runs"], 2, "pickled Python objects"),
    ("main", lambda w: TINY + ["--downstream_task", "sex", "--resume_ckpt_path", w["pretrain"],
                               "--output_dir", w["root"] / "runs"], 2, "was made with --task pretraining"),
    ("main", lambda w: TINY + ["--downstream_task", "sex", "--test_only", "--test_ckpt_path",
                               w["regression"], "--output_dir", w["root"] / "runs"], 2, "is a regression model"),
    ("main", lambda w: TINY + ["--dataset_name", "CSV", "--image_path", _h5(w["root"]), "--label_csv",
                               w["root"] / "empty.csv", "--downstream_task", "sex", "--output_dir",
                               w["root"] / "runs"], 2, "header but no rows"),
    ("main", lambda w: TINY + ["--dataset_name", "CSV", "--image_path", _h5(w["root"]), "--label_csv",
                               w["root"] / "latin1.csv", "--downstream_task", "sex", "--output_dir",
                               w["root"] / "runs"], 2, "not UTF-8"),
    ("main", lambda w: TINY + ["--dataset_name", "CSV", "--image_path", _h5(w["root"]), "--label_csv",
                               _dup_csv(w["root"]), "--downstream_task", "sex", "--output_dir",
                               w["root"] / "runs"], 2, "is listed again"),
    ("main", lambda w: [a if a != "24" else "30" for a in TINY] + [
        "--dataset_name", "CSV", "--image_path", _h5(w["root"]), "--pretraining", "--output_dir",
        w["root"] / "runs"], 2, "use --img_size 24 24 24"),
    ("main", lambda w: TINY + ["--dataset_name", "CSV", "--image_path", _nostats_h5(w["root"]), "--pretraining",
                               "--output_dir", w["root"] / "runs"], 2, "statistics missing: ['std']"),
    # --- analysis scripts ------------------------------------------------------------------
    ("embed", lambda w: ["--checkpoint", w["pretrain"], "--dataset_name", "CSV", "--image_path",
                         _nan_h5(w["root"]), "--output", w["root"] / "e.csv", "--device", "cpu"], 2,
     "non-finite values (NaN/inf) in the clip"),
    ("check_flops", lambda w: ["--embed_dim", "0"], 2, "--embed_dim"),
    ("predict", lambda w: ["--checkpoint", w["pickle"], "--nifti", w["root"] / "good" / "s1_rest.nii.gz"], 2,
     "pickled Python objects"),
    ("predict", lambda w: ["--checkpoint", w["random"], "--nifti", w["root"] / "good" / "s1_rest.nii.gz"], 2,
     "not a PyTorch checkpoint"),
    ("attribute", lambda w: ["--checkpoint", w["pickle"], "--output_dir", w["root"] / "maps",
                             "--nifti", w["root"] / "good" / "s1_rest.nii.gz"], 2, "pickled Python objects"),
    ("embed", lambda w: ["--checkpoint", w["pretrain"], "--output", w["file"] / "e.csv"], 2, "a_file"),
]


if torch.cuda.is_available():  # the CUDA-less refusal cannot be provoked on a GPU machine
    CASES = [case for case in CASES if case[3] != "needs a CUDA GPU"]


@pytest.mark.parametrize("command, argv, code, fragment", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_clear_line(w, command, argv, code, fragment):
    got, output = run_command(command, argv(w))
    assert "Traceback" not in output, output
    assert got == code, output[-1500:]
    assert fragment in output, output[-1500:]


def test_disk_full_during_preprocessing_is_one_line_and_leaves_nothing(w, monkeypatch):
    """ENOSPC injected through the free-space probe: the run fails with one line naming the
    disk, nothing half-written is left, the exit code says a run failed."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1024, 1024))
    out = w["root"] / "full"
    code, output = run_command("preprocess", ["nifti", "--input", w["root"] / "good", "--output_dir", out,
                                              "--target_shape", 24, 24, 24, "--min_frames", 4, "--no_progress"])
    assert code == 1 and "disk full" in output and "Traceback" not in output
    assert not [p for p in out.rglob("*") if p.suffix == ".h5" or ".tmp-" in p.name]


def test_earlier_cases_are_one_clear_line(tmp_path):
    """check_flops names the flag; predict on an empty folder says so; an edited checkpoint
    is one line, not a traceback."""
    import torch

    code, out = run_command("check_flops", ["--img_size", "-6", "96", "96", "20"])
    assert code == 2 and "--img_size -6 96 96 20: every value must be positive" in out
    assert "Traceback" not in out
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = run_command("predict", ["--checkpoint", empty, "--nifti", tmp_path / "x.nii.gz"])
    assert code == 2 and "an empty folder, not a checkpoint" in out and "backbone-only" not in out
    from analysis_helpers import save_lightning_like, tiny_module

    ckpt = torch.load(save_lightning_like(tiny_module("classification"), tmp_path / "c.ckpt"), weights_only=True)
    ckpt["hyper_parameters"]["config"]["img_size"] = [30, 30, 30, 4]
    torch.save(ckpt, tmp_path / "edited.ckpt")
    from neuromamba.training.module import NeuroMambaModule

    with pytest.raises(ValueError, match=r"edited.ckpt: its stored settings do not match its weights "
                                         r"\(size mismatch for model.embedder.pos"):
        NeuroMambaModule.from_checkpoint(str(tmp_path / "edited.ckpt"))
