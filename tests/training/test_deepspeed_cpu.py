"""DeepSpeed's real ZeRO engine, stages 1, 2 and 3, on the CPU: what its checkpoint folders give.

Two gloo processes train FMamba under Lightning's DeepSpeedStrategy (the project's subclass)
on DeepSpeed's CPU accelerator, through ``tests/training/deepspeed_cpu.py`` (main.py plus the
test-only shims where Lightning insists on CUDA). Then the folders they write are used the way
users use them: fine-tuning (--load_model_path FOLDER follows the folder's input spec),
resuming (--resume_ckpt_path FOLDER continues at the saved step), testing a ZeRO-3 folder,
predict.py and embed.py. Nothing here skips on a CPU machine.
"""
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from analysis_helpers import run_script
from process_helpers import run_process_group
from neuromamba.checkpoints import read_deepspeed_as_lightning, read_state_dict
from neuromamba.cli import parse_args
from test_predict import write_nifti

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "tests" / "training" / "deepspeed_cpu.py"
TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--dummy_num_subjects", "12", "--batch_size", "2", "--seed", "3"]
# Not the paper's input, so a fine-tuning that follows the folder's spec shows it.
PRETRAIN = TINY + ["--pretraining", "--input_scaling_method", "znorm_zeroback", "--max_epochs", "1"]


def main_py(*flags, deepspeed=True, env=None, timeout=300):
    """main.py (through the DeepSpeed CPU wrapper when ``deepspeed``) in its own process group,
    killed whole on timeout so no rank outlives a failed test."""
    script = WRAPPER if deepspeed else REPO / "project" / "main.py"
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "project"), "OMP_NUM_THREADS": "1", **(env or {})}
    proc = run_process_group([sys.executable, str(script), *flags], env=full_env, timeout=timeout,
                             what=" ".join(flags))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One pretraining per ZeRO stage, 2 processes each: {stage: (run folder, engine weights)}."""
    root = tmp_path_factory.mktemp("deepspeed")
    runs = {}
    for stage in (1, 2, 3):
        engine = root / f"engine_stage{stage}.pt"
        main_py(*PRETRAIN, "--strategy", f"deepspeed_stage_{stage}", "--devices", "2",
                "--output_dir", str(root), "--run_name", f"pre{stage}",
                env={"NEUROMAMBA_TEST_ENGINE_WEIGHTS": str(engine)})
        runs[stage] = (root / f"pre{stage}", torch.load(engine))
    return runs


def _optimizer_floats(obj):
    """Every floating tensor in a (nested) optimizer state."""
    if torch.is_tensor(obj):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _optimizer_floats(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _optimizer_floats(v)]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_folder_holds_the_engines_fp32_weights(pretrained, stage):
    run_dir, engine = pretrained[stage]
    folder = run_dir / "checkpoints" / "last.ckpt"
    assert folder.is_dir() and (folder / "latest").is_file()
    shards = sorted((folder / (folder / "latest").read_text().strip()).glob("*optim_states.pt"))
    assert len(shards) == 2  # one optimizer shard per rank
    # The master weights (and Adam's moments) are fp32, whatever the compute dtype.
    for shard in shards:
        floats = _optimizer_floats(torch.load(shard, map_location="cpu", weights_only=False))
        assert floats and all(t.dtype == torch.float32 for t in floats)
    with pytest.raises(ValueError, match=r"last\.ckpt is a DeepSpeed checkpoint folder.*--allow_pickle"):
        read_state_dict(folder)  # DeepSpeed pickles: never unpickled unasked
    state = read_state_dict(folder, allow_pickle=True)  # consolidated with zero_to_fp32
    assert set(state) == {k[len("model."):] for k in engine} | {"embedder.pos"}
    for key, value in engine.items():
        assert state[key[len("model."):]].dtype == torch.float32
        assert torch.equal(state[key[len("model."):]], value.float()), key


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_fine_tuning_from_a_folder_follows_its_input_and_weights(pretrained, tmp_path, stage):
    run_dir, engine = pretrained[stage]
    folder = run_dir / "checkpoints" / "last.ckpt"
    resolved = parse_args(["--downstream_task", "sex", "--load_model_path", str(folder), "--allow_pickle"])
    assert resolved.input_scaling_method == "znorm_zeroback" and list(resolved.img_size) == [24, 24, 24, 4]
    assert (resolved.embed_dim, resolved.depth, resolved.d_state) == (16, 1, 8)  # the folder's
    main_py(*TINY, "--downstream_task", "sex", "--load_model_path", str(folder), "--allow_pickle",
            "--freeze_feature_extractor", "--max_epochs", "1", "--output_dir", str(tmp_path),
            "--run_name", "ft", deepspeed=False)
    args = yaml.safe_load((tmp_path / "ft" / "args.yaml").read_text())
    assert args["input_scaling_method"] == "znorm_zeroback"  # the folder's, not the paper's
    tuned = torch.load(tmp_path / "ft" / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    for key, value in engine.items():  # the frozen backbone is the folder's, bit for bit
        if not key.startswith("model.output_layer"):
            assert torch.equal(tuned[key], value), key


def _metric_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_from_a_folder_continues_at_the_saved_step(pretrained, tmp_path):
    run_dir, _ = pretrained[2]
    folder = run_dir / "checkpoints" / "last.ckpt"
    saved_step = torch.load(folder / "checkpoint" / "mp_rank_00_model_states.pt",
                            weights_only=False)["global_step"]
    assert saved_step > 0
    main_py(*PRETRAIN[:-2], "--max_epochs", "2", "--strategy", "deepspeed_stage_2", "--devices", "2",
            "--resume_ckpt_path", str(folder), "--output_dir", str(tmp_path), "--run_name", "resumed")
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt" / "checkpoint"
                         / "mp_rank_00_model_states.pt", weights_only=False)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * saved_step
    train_epochs = {r["epoch"] for r in _metric_rows(tmp_path / "resumed") if r.get("train/loss_epoch")}
    assert train_epochs == {"1"}  # only the second epoch was trained


@pytest.mark.slow
def test_zero3_fine_tuning_testing_predict_and_embed(pretrained, tmp_path, repo_root):
    """Fine-tune under ZeRO-3 from a ZeRO-3 folder; its test (DeepSpeed issue 7272's path), then
    predict.py and embed.py on the fine-tuned folder give what the same weights give from a file."""
    run_dir, _ = pretrained[3]
    out = main_py(*TINY, "--downstream_task", "sex", "--load_model_path",
                  str(run_dir / "checkpoints" / "last.ckpt"), "--allow_pickle", "--max_epochs", "1",
                  "--strategy", "deepspeed_stage_3", "--devices", "2", "--output_dir", str(tmp_path),
                  "--run_name", "ft3")
    assert "test/auroc" in out
    folder = next((tmp_path / "ft3" / "checkpoints").glob("best-*"))
    assert folder.is_dir()
    # The same weights as one file, consolidated the way the strategy's own test loaded them.
    consolidated = read_deepspeed_as_lightning(folder, allow_pickle=True)
    file_ckpt = str(tmp_path / "same_weights.ckpt")
    torch.save({k: consolidated[k] for k in ("state_dict", "hyper_parameters")}, file_ckpt)

    nifti = tmp_path / "run.nii.gz"
    write_nifti(nifti)
    results = []
    for ckpt in (str(folder), file_ckpt):
        json_out = tmp_path / f"pred_{len(results)}.json"
        res = run_script(repo_root, "predict", "--checkpoint", ckpt, "--nifti", nifti, "--json",
                         json_out, "--allow_pickle", "--device", "cpu")
        assert res.returncode == 0, res.stderr
        results.append(json.loads(json_out.read_text()))
    assert results[0]["probabilities"] == results[1]["probabilities"]
    assert results[0]["num_clips"] == results[1]["num_clips"] >= 2

    embeddings = []
    for ckpt in (str(folder), file_ckpt):
        emb = tmp_path / f"emb_{len(embeddings)}.npz"
        res = run_script(repo_root, "embed", "--checkpoint", ckpt, "--allow_pickle", "--dataset_name",
                         "Dummy", "--dummy_num_subjects", "4", "--output", emb, "--device", "cpu")
        assert res.returncode == 0, res.stderr
        embeddings.append(dict(np.load(emb)))
    assert embeddings[0].keys() == embeddings[1].keys()
    for key in embeddings[0]:
        assert (embeddings[0][key] == embeddings[1][key]).all(), key
