"""The run spec: one precedence (flag > checkpoint > recipe > paper), the paper as the
default, recipes announced and recorded, checkpoints of every format read back the same way."""
import json

import numpy as np

import pytest
import torch

from neuromamba.checkpoints import save_released_format
from neuromamba.cli import parse_args
from neuromamba.models import FMamba
from neuromamba.spec import (PAPER_DEFAULTS, Recipe, load_recipe, read_checkpoint_settings,
                             resolve, spec_from_config)

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu"]


def _released(tmp_path, name="released.pt", spec=None):
    model = FMamba(embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4))
    return str(save_released_format(model, tmp_path / name, spec=spec))


def _project_ckpt(path, **config):
    base = {"task": "pretraining", "embed_dim": 16, "depth": 1, "d_state": 8, "headdim": 16,
            "img_size": [24, 24, 24, 4], "patch_size": [6, 6, 6, 2]}
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {**base, **config}}}, path)
    return str(path)


def test_new_runs_get_the_papers_input_and_head():
    args = parse_args(TINY + ["--downstream_task", "sex"])
    assert args.input_scaling_method == "znorm_minback" and args.clf_head_version == "linear"
    assert args.recipe == "paper"
    assert args.spec["input"]["input_scaling_method"] == "znorm_minback"
    assert args.spec["model"]["clf_head_version"] == "linear"
    assert args.setting_sources["input_scaling_method"] == "paper"
    # the tiny clip is a departure, said as such; nothing else is
    assert args.departures == ["img_size 24 24 24 4 (paper: 96 96 96 20, from the flag)"]


def test_the_paper_defaults_are_the_originals():
    assert PAPER_DEFAULTS["input_scaling_method"] == "znorm_minback"
    assert PAPER_DEFAULTS["clf_head_version"] == "linear"
    assert PAPER_DEFAULTS["img_size"] == [96, 96, 96, 20] and PAPER_DEFAULTS["patch_size"] == [6, 6, 6, 2]
    args = parse_args(["--downstream_task", "sex"])
    assert args.run_context.announce == ["recipe paper: the paper's settings throughout"] and args.departures == []
    assert (args.embed_dim, args.depth, args.d_state, args.headdim) == (192, 12, 48, 192)


def test_recipe_tuned_is_announced_flag_by_flag_and_recorded():
    args = parse_args(["--downstream_task", "sex", "--recipe", "tuned"])
    assert args.input_scaling_method == "voxel_demean_static" and args.clf_head_version == "attention"
    assert args.run_context.announce[0] == ("recipe tuned: clf_head_version attention (paper: linear); "
                                 "input_scaling_method voxel_demean_static (paper: znorm_minback)")
    assert args.spec["recipe"] == "tuned" and len(args.spec["departures"]) == 2
    # an explicit flag wins over the recipe, and is then no departure
    args = parse_args(["--downstream_task", "sex", "--recipe", "tuned", "--clf_head_version", "linear"])
    assert args.clf_head_version == "linear"
    assert args.departures == ["input_scaling_method voxel_demean_static (paper: znorm_minback)"]


def test_explicit_project_only_choices_are_departures_and_paper_options_are_not():
    args = parse_args(TINY + ["--downstream_task", "sex", "--clf_head_version", "attention",
                              "--img_size", "96", "96", "96", "20"])
    assert args.departures == ["clf_head_version attention (paper: linear, from the flag)"]
    args = parse_args(["--downstream_task", "sex", "--clf_head_version", "mamba",
                       "--input_scaling_method", "minmax_zeroback"])
    assert args.departures == []  # both are options of the original


def test_pretraining_ignores_the_head_in_departures():
    args = parse_args(["--pretraining", "--recipe", "tuned"])
    assert args.departures == ["input_scaling_method voxel_demean_static (paper: znorm_minback)"]


def test_precedence_flag_checkpoint_recipe_paper(tmp_path):
    ckpt = read_checkpoint_settings(_project_ckpt(tmp_path / "a.ckpt", input_scaling_method="znorm_zeroback"))
    recipe = Recipe("r", {"input_scaling_method": "znorm_demean", "clf_head_version": "attention",
                          "stride_within_seq": 2})
    keys = ("input_scaling_method", "clf_head_version", "stride_within_seq", "pos_embedding")
    r = resolve({"stride_within_seq": 3}, ckpt, ("input_scaling_method",), recipe, keys=keys)
    assert r.values == {"input_scaling_method": "znorm_zeroback", "clf_head_version": "attention",
                        "stride_within_seq": 3, "pos_embedding": "nerf"}
    assert r.sources == {"input_scaling_method": "checkpoint", "clf_head_version": "recipe",
                         "stride_within_seq": "flag", "pos_embedding": "paper"}


def test_a_released_checkpoint_is_the_papers_spec_with_its_own_dims(tmp_path):
    settings = read_checkpoint_settings(_released(tmp_path))
    assert settings.format == "released" and settings.config is None
    assert settings.values["input_scaling_method"] == "znorm_minback"
    assert {k: settings.values[k] for k in ("embed_dim", "depth", "d_state", "headdim")} == \
        {"embed_dim": 16, "depth": 1, "d_state": 8, "headdim": 16}
    # fine-tuning it from scratch flags (no dims given) follows its dims and the paper's input
    args = parse_args(["--img_size", "24", "24", "24", "4", "--downstream_task", "sex", "--recipe", "tuned",
                       "--load_model_path", settings.path])
    assert (args.embed_dim, args.depth, args.input_scaling_method) == (16, 1, "znorm_minback")
    # the head is the fine-tuning run's choice: the tuned recipe's for a pretrained backbone
    assert args.clf_head_version == "auto" and args.freeze_feature_extractor
    assert any("znorm_minback from" in line and "recipe tuned: voxel_demean_static" in line
               for line in args.run_context.announce)


def test_an_explicit_other_input_than_the_backbones_is_kept_with_one_warning(tmp_path):
    path = _released(tmp_path)
    args = parse_args(TINY + ["--downstream_task", "sex", "--load_model_path", path,
                              "--input_scaling_method", "znorm_demean"])
    assert args.input_scaling_method == "znorm_demean"
    (note,) = [line for line in args.run_context.announce if "pretrained on" in line]
    assert "--input_scaling_method znorm_demean (checkpoint: znorm_minback)" in note


def test_a_backbone_export_carries_its_spec(tmp_path):
    spec = parse_args(TINY + ["--pretraining", "--recipe", "tuned"]).spec
    path = _released(tmp_path, "export.pt", spec=spec)
    assert json.loads(open(path + ".spec.json").read())["recipe"] == "tuned"
    settings = read_checkpoint_settings(path)
    assert settings.format == "export" and settings.values["input_scaling_method"] == "voxel_demean_static"
    args = parse_args(["--img_size", "24", "24", "24", "4", "--downstream_task", "sex", "--load_model_path", path])
    assert args.input_scaling_method == "voxel_demean_static" and args.setting_sources["input_scaling_method"] == "checkpoint"


def test_older_configs_without_a_key_mean_the_papers_value(tmp_path):
    spec = spec_from_config({"embed_dim": 16, "depth": 1, "d_state": 8, "headdim": 16})
    assert spec.input.input_scaling_method == "znorm_minback" and spec.model.clf_head_version == "linear"
    assert read_checkpoint_settings(_project_ckpt(tmp_path / "old.ckpt")).values["input_scaling_method"] == "znorm_minback"


def test_resume_keeps_the_runs_input_or_refuses(tmp_path):
    ckpt = _project_ckpt(tmp_path / "last.ckpt", task="classification", downstream_task="sex",
                         input_scaling_method="znorm_zeroback", clf_head_version="mamba",
                         background_removal="batch")
    args = parse_args(["--downstream_task", "sex", "--resume_ckpt_path", ckpt])
    assert args.input_scaling_method == "znorm_zeroback" and args.clf_head_version == "mamba"
    assert args.background_removal == "batch" and list(args.img_size) == [24, 24, 24, 4]
    assert (args.embed_dim, args.depth) == (16, 1)
    with pytest.raises(ValueError, match=r"--input_scaling_method znorm_minback \(checkpoint: znorm_zeroback\)"):
        parse_args(["--downstream_task", "sex", "--resume_ckpt_path", ckpt,
                    "--input_scaling_method", "znorm_minback"])
    with pytest.raises(ValueError, match=r"--embed_dim 192 \(checkpoint: 16\)"):
        parse_args(["--downstream_task", "sex", "--resume_ckpt_path", ckpt, "--embed_dim", "192"])
    # a recipe never overrides the run being resumed
    args = parse_args(["--downstream_task", "sex", "--resume_ckpt_path", ckpt, "--recipe", "tuned"])
    assert args.input_scaling_method == "znorm_zeroback" and args.clf_head_version == "mamba"


def test_recipes_load_by_name_or_path_and_refuse_unknowns(tmp_path):
    assert load_recipe(None).name == "paper" and load_recipe("tuned").values["clf_head_version"] == "attention"
    custom = tmp_path / "mine.yaml"
    custom.write_text("learning_rate: 0.005\ninput_scaling_method: znorm_zeroback\n")
    args = parse_args(["--downstream_task", "sex", "--recipe", str(custom)])
    assert args.learning_rate == 0.005 and args.input_scaling_method == "znorm_zeroback"
    assert "learning_rate 0.005 (default: 0.0001)" in args.departures
    args = parse_args(["--downstream_task", "sex", "--recipe", str(custom), "--learning_rate", "1e-4"])
    assert args.learning_rate == 1e-4 and not any("learning_rate" in d for d in args.departures)
    with pytest.raises(ValueError, match="is not one of"):
        parse_args(["--recipe", "nope"])
    (tmp_path / "bad.yaml").write_text("no_such_flag: 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_args(["--recipe", str(tmp_path / "bad.yaml")])
    (tmp_path / "badval.yaml").write_text("input_scaling_method: nonsense\n")
    with pytest.raises(ValueError, match="--input_scaling_method 'nonsense'"):
        parse_args(["--recipe", str(tmp_path / "badval.yaml")])


def test_img_size_reads_the_same_raw_frames_under_every_recipe(tmp_path):
    """--img_size ... T is the number of raw frames a clip reads under every recipe; the tuned
    input's static token comes on top (it used to take 2 of the T frames: a 30-frame run gave
    3 clips under one recipe and 5 under the other)."""
    from neuromamba.cli import parse_args, run_config_of
    from neuromamba.training.runner import build_datamodule

    flags = ["--downstream_task", "sex", "--dummy_num_subjects", "6", "--dummy_num_frames", "30",
             "--img_size", "24", "24", "24", "8", "--embed_dim", "16", "--depth", "1"]
    clips = {}
    for recipe in ("paper", "tuned"):
        args = parse_args(flags + ["--recipe", recipe, "--output_dir", str(tmp_path / recipe)])
        assert args.spec["input"]["img_size"] == [24, 24, 24, 8]
        static = 2 if recipe == "tuned" else 0
        assert args.spec["model"]["img_size"] == [24, 24, 24, 8 + static]  # the token grid follows
        dm = build_datamodule(run_config_of(args), tmp_path / recipe)
        dm.setup("fit")
        dataset = dm.datasets["train"].datasets[0]
        clips[recipe] = (dataset.clip_subjects(), dataset.index.tolist(), dataset[0]["fmri"].numpy())
        batch = dm.model_batches("train", 2).__iter__().__next__()
        assert batch["fmri"].shape[-1] == 8 + static
    paper, tuned = clips["paper"], clips["tuned"]
    assert paper[0] == tuned[0] and paper[1] == tuned[1]  # the same clips: runs and first frames
    assert len(paper[1]) == 4 * 3  # 30 frames -> 3 clips of 8 per run (4 train subjects)
    np.testing.assert_array_equal(paper[2], tuned[2])  # the same raw frames


def test_a_stored_config_of_either_meaning_gives_the_same_model():
    """Checkpoints written before img_size counted raw frames stored the model's frames (the
    static token included): they read back as the same model and the same clips."""
    from neuromamba.spec import IMG_SIZE_MEANING_KEY, RAW_FRAMES, spec_from_config

    base = {"embed_dim": 16, "depth": 1, "d_state": 8, "headdim": 16, "patch_size": [6, 6, 6, 2],
            "input_scaling_method": "voxel_demean_static"}
    old = spec_from_config({**base, "img_size": [24, 24, 24, 8]})  # model frames, no key
    new = spec_from_config({**base, "img_size": [24, 24, 24, 6], IMG_SIZE_MEANING_KEY: RAW_FRAMES})
    assert old == new and old.model.img_size == (24, 24, 24, 8) and old.input.img_size == (24, 24, 24, 6)
    paper = spec_from_config({**base, "input_scaling_method": "znorm_minback", "img_size": [24, 24, 24, 8]})
    assert paper.model.img_size == paper.input.img_size == (24, 24, 24, 8)  # released files unchanged


def test_test_only_and_resume_record_the_recipe_their_checkpoint_was_trained_with(tmp_path):
    """--test_only on a tuned checkpoint printed "recipe paper: ... (from the checkpoint)";
    resuming a paper run with --recipe tuned recorded recipe tuned though nothing of it applied."""
    tuned = _project_ckpt(tmp_path / "tuned.ckpt", task="classification", downstream_task="sex",
                          recipe="tuned", input_scaling_method="voxel_demean_static",
                          clf_head_version="attention", img_size=[24, 24, 24, 4],
                          img_size_meaning="raw_frames")
    args = parse_args(["--downstream_task", "sex", "--test_only", "--test_ckpt_path", tuned])
    assert args.recipe == "tuned" and args.run_context.announce[0].startswith("recipe tuned: ")
    assert "clf_head_version attention (paper: linear, from the checkpoint)" in args.run_context.announce[0]

    paper = _project_ckpt(tmp_path / "paper.ckpt", task="classification", downstream_task="sex",
                          recipe="paper", img_size=[24, 24, 24, 4], img_size_meaning="raw_frames",
                          input_scaling_method="znorm_minback", clf_head_version="linear")
    args = parse_args(["--downstream_task", "sex", "--recipe", "tuned", "--resume_ckpt_path", paper])
    assert args.recipe == "paper" and args.spec["recipe"] == "paper"
    assert args.input_scaling_method == "znorm_minback" and args.clf_head_version == "linear"

    # fine-tuning mixes: the backbone's input from its checkpoint (named with its recipe), the
    # head from the command's recipe
    args = parse_args(["--downstream_task", "sex", "--load_model_path", tuned])
    assert args.recipe == "paper" and args.clf_head_version == "linear"
    assert "input_scaling_method voxel_demean_static (paper: znorm_minback, from the checkpoint " \
           "(recipe tuned))" in args.departures


def test_what_resolution_found_is_a_typed_context_not_private_fields_or_settings(tmp_path):
    """No private fields on the namespace: the start lines and the checkpoint read travel in
    args.run_context, which is never written as a setting."""
    from neuromamba.run_settings import RunContext, args_to_dict

    ckpt = _project_ckpt(tmp_path / "a.ckpt", task="pretraining", recipe="paper",
                         img_size_meaning="raw_frames")
    args = parse_args(["--pretraining", "--resume_ckpt_path", ckpt])
    assert isinstance(args.run_context, RunContext) and args.run_context.checkpoint.path == ckpt
    assert args.run_context.announce[0].startswith("recipe paper")
    assert not [k for k in vars(args) if k.startswith("_")]
    assert "run_context" not in args_to_dict(args)
