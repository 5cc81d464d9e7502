"""Every command block of the original NeuroMamba README runs as written: only the paths, the
device flags and the sizes are made tiny (and the run limited to a step or two)."""
import csv
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[3] / "shared" / "reference" / "neuromamba_readme.txt"
PROJECT = Path(__file__).resolve().parents[2] / "project"

# flag -> tiny replacement values (None: drop the flag and its values)
TINY_VALUES = {
    "--img_size": ["24", "24", "24", "4"],
    "--depth": ["1"],
    "--precision": ["32"],
    "--accelerator": ["cpu"],
    "--devices": ["1"],
    "--num_nodes": ["1"],
    "--strategy": ["auto"],
    "--loggername": ["csv"],
    "--max_epochs": ["1"],
}
RUN_LIMITS = ["--limit_train_batches", "2", "--limit_val_batches", "1", "--limit_test_batches", "1",
              "--no_progress_bar"]


def readme_commands() -> dict:
    """{'main_1': argv, ...}: each ``python project/X.py \\`` block, its continuation lines
    joined; prose glued to the last value (the text export lost line breaks) is cut off."""
    if not README.exists():
        pytest.skip(f"{README} not found (it sits in the workplace's shared/reference)")
    lines = README.read_text().splitlines()
    commands, i = {}, 0
    while i < len(lines):
        line = lines[i].strip()
        match = re.match(r"python project/(\w+)\.py", line)
        if not match:
            i += 1
            continue
        parts = [line.rstrip("\\").strip()]
        while lines[i].rstrip().endswith("\\"):
            i += 1
            parts.append(lines[i].strip().rstrip("\\").strip())
        last = re.match(r"^(.*?[a-z0-9_])([A-Z][a-z].*)?$", parts[-1])
        parts[-1] = last.group(1) if last else parts[-1]
        tokens = shlex.split(" ".join(parts))[2:]
        name = match.group(1)
        commands[f"{name}_{sum(k.startswith(name) for k in commands) + 1}"] = tokens
        i += 1
    return commands


def make_tiny(tokens, paths, drop=()):
    """The block with tiny values; flags in ``drop`` are left out with their values (the
    README's own variants: "drop --load_model_path" trains from scratch)."""
    out, i = [], 0
    while i < len(tokens):
        j = i + 1
        while j < len(tokens) and not tokens[j].startswith("--"):
            j += 1
        if tokens[i] not in drop:
            values = TINY_VALUES.get(tokens[i], tokens[i + 1:j])
            out += [tokens[i], *(paths.get(v, v) for v in values)]
        i = j
    return out


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny HCP-like HDF5 folder with an HCP label table, and a released-format E192 file."""
    from neuromamba.checkpoints import save_released_format
    from neuromamba.data.dummy import DummySpec, write_dummy_runs
    from neuromamba.models import FMamba

    root = tmp_path_factory.mktemp("readme")
    h5 = root / "hcp_hdf5"
    write_dummy_runs(h5, DummySpec(num_subjects=10, img_size=(24, 24, 24), num_frames=8, seed=3))
    (h5 / "labels.csv").unlink()
    (root / "metadata").mkdir()  # the original's protocol: labels in metadata/*.csv
    with open(root / "metadata" / "hcp_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Subject", "Gender", "Age_in_Yrs"])
        for i, subject in enumerate(sorted(p.name for p in h5.iterdir() if p.is_dir())):
            writer.writerow([subject, "MF"[i % 2], 22 + i])
    torch.manual_seed(0)
    backbone = FMamba.from_variant("base", depth=1, img_size=(24, 24, 24, 4))
    released = save_released_format(backbone, root / "3M_E192.pt")
    return {"/path/to/hdf5": str(h5), "/path/to/hcp_hdf5": str(h5), "/path/to/3M_E192.pt": str(released),
            "root": root}


def test_the_readme_has_the_expected_blocks():
    names = sorted(readme_commands())
    assert names == ["check_flops_1", "main_1", "main_2"], names


@pytest.mark.parametrize("block, extra, drop, head", [
    ("main_1", [], (), None),                                        # pretraining
    ("main_2", [], (), "mamba"),                                     # HCP sex fine-tuning from 3M_E192.pt
    ("main_2", ["--freeze_feature_extractor"], (), "mamba"),         # ... with the backbone frozen
    ("main_2", [], ("--load_model_path",), "mamba"),                 # ... from scratch
    ("main_2", [], ("--clf_head_version",), "linear"),               # ... naming no head: the paper's
])
def test_main_blocks_run_the_papers_recipe(block, extra, drop, head, tiny_world):
    """Each block runs a step, and records the paper's recipe: its input (znorm_minback) and
    head, in args.yaml, summary.json and the checkpoint."""
    import yaml

    import main

    name = f"{block}_{len(extra)}_{'_'.join(d.strip('-') for d in drop)}"
    argv = make_tiny(readme_commands()[block], tiny_world, drop) + extra + RUN_LIMITS + [
        "--output_dir", str(tiny_world["root"] / "runs"), "--run_name", name]
    assert main.main(argv) == 0, argv
    run_dir = tiny_world["root"] / "runs" / name
    assert (run_dir / "metrics.csv").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    recorded = yaml.safe_load((run_dir / "args.yaml").read_text())
    stored = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]
    summary = json.loads((run_dir / "summary.json").read_text())
    for config in (recorded, stored, {**summary["spec"]["model"], **summary["spec"]["input"],
                                      "recipe": summary["recipe"]}):
        assert config["recipe"] == "paper"
        assert config["input_scaling_method"] == "znorm_minback"
        if head:
            assert config["clf_head_version"] == head
    assert recorded["spec"] == stored["spec"] == summary["spec"]
    # nothing departs from the paper but the tiny clip size of this test
    assert recorded["departures"] == ["img_size 24 24 24 4 (paper: 96 96 96 20, from the flag)"]


def test_check_flops_block_runs(tiny_world, capsys):
    import check_flops

    argv = make_tiny(readme_commands()["check_flops_1"], tiny_world)
    assert check_flops.main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "C=256" in out  # --embed_dim 256 alone: the medium variant's dims
    # the paper's head is costed (its line names the recipe; only the tiny clip departs)
    assert out.splitlines()[0] == "recipe paper: img_size 24 24 24 4 (paper: 96 96 96 20, from the flag)"
    from neuromamba.analysis.flops_cli import resolve_settings

    args = check_flops.build_parser().parse_args(argv)
    resolve_settings(args)
    assert args.clf_head_version == "linear" and args.input_scaling_method == "znorm_minback"
    args = check_flops.build_parser().parse_args(argv + ["--recipe", "tuned"])
    assert resolve_settings(args).startswith("recipe tuned:") and args.clf_head_version == "attention"


def test_embed_dim_alone_selects_its_variant():
    from neuromamba.cli import parse_args

    for width, (d_state, headdim) in {128: (32, 128), 192: (48, 192), 256: (64, 256), 384: (96, 384)}.items():
        args = parse_args(["--embed_dim", str(width), "--depth", "12"])
        assert (args.d_state, args.headdim) == (d_state, headdim)
    args = parse_args(["--embed_dim", "160"])  # no variant of that width: the variants' rule
    assert (args.depth, args.d_state, args.headdim) == (12, 40, 160)
    args = parse_args(["--embed_dim", "128", "--headdim", "64", "--d_state", "16"])  # explicit wins
    assert (args.d_state, args.headdim) == (16, 64)
    args = parse_args(["--model_size", "small", "--embed_dim", "192"])  # size names the base
    assert (args.embed_dim, args.d_state, args.headdim) == (192, 32, 128)
    args = parse_args([])
    assert (args.embed_dim, args.d_state, args.headdim) == (192, 48, 192)


def test_label_smoothing_defaults_to_the_originals():
    from neuromamba.cli import parse_args

    assert parse_args(["--downstream_task", "sex"]).label_smoothing == 0.1
    assert parse_args(["--downstream_task", "age", "--downstream_task_type", "regression"]).label_smoothing == 0.0
    assert parse_args(["--pretraining"]).label_smoothing == 0.0
    assert parse_args(["--downstream_task", "sex", "--label_smoothing", "0"]).label_smoothing == 0.0
