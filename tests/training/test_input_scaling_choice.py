"""Which input a run trains on: the default (znorm_demean) for new runs, the checkpoint's own
input when fine-tuning one without --input_scaling_method (the paper's for released files),
and a warning when the user picks another input than the backbone was pretrained on."""
import torch

from neuromamba.checkpoints import save_released_format
from neuromamba.cli import parse_args
from neuromamba.models import FMamba
from neuromamba.training.run_checks import (follow_pretrained_input, pretrained_input_notes,
                                            pretrained_input_scaling)

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--downstream_task", "sex"]


def _released(tmp_path):
    model = FMamba(embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4))
    return str(save_released_format(model, tmp_path / "released.pt"))


def test_new_runs_get_the_default_input():
    args = parse_args(TINY)
    assert args.input_scaling_method == "znorm_demean" and not args.input_scaling_follows_checkpoint
    assert follow_pretrained_input(args) == []


def test_a_released_checkpoint_is_fine_tuned_on_the_paper_input(tmp_path):
    args = parse_args(TINY + ["--load_model_path", _released(tmp_path)])
    notes = follow_pretrained_input(args)
    assert args.input_scaling_method == "znorm_minback"
    assert len(notes) == 1 and "znorm_minback" in notes[0]
    assert pretrained_input_notes(args.input_scaling_method, args.load_model_path) == []


def test_an_explicit_other_input_is_kept_with_a_warning(tmp_path):
    path = _released(tmp_path)
    args = parse_args(TINY + ["--load_model_path", path, "--input_scaling_method", "znorm_demean"])
    assert follow_pretrained_input(args) == [] and args.input_scaling_method == "znorm_demean"
    (note,) = pretrained_input_notes(args.input_scaling_method, path)
    assert "pretrained on --input_scaling_method znorm_minback" in note
    assert "pass --input_scaling_method znorm_minback" in note


def test_a_project_checkpoint_reports_its_own_input(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {"input_scaling_method": "znorm_demean"}}}, path)
    assert pretrained_input_scaling(str(path)) == "znorm_demean"
    old = tmp_path / "old.ckpt"  # written before znorm_demean existed: no key, the paper's input
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}}, old)
    assert pretrained_input_scaling(str(old)) == "znorm_minback"
    assert pretrained_input_scaling(str(tmp_path)) is None  # a folder (DeepSpeed) keeps no config
