"""Command-line flags of ``project/main.py``: their definitions, --config and --recipe values.

The flag names and meanings of the original NeuroMamba README are kept (``--pretraining
--use_autoregressive --calc_loss_without_background --clf_head_version ...``). ``parse_args``
returns the Namespace that :func:`neuromamba.run_settings.finalize` validated and resolved;
``parse_run`` the typed :class:`neuromamba.run_config.RunConfig` built from it, which is all
that the training code below reads.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from neuromamba.fileio import read_yaml_mapping
from neuromamba.flag_help import CommandParser, HelpFormatter, fill_missing_help, prog_for
from neuromamba.run_config import RunConfig
from neuromamba.run_settings import (DEFAULT_LABEL_SMOOTHING, PRECISIONS, _head_names,  # noqa: F401
                                     args_to_dict, finalize, run_config_of)
from neuromamba.paper import CHUNK_SIZE


def build_parser() -> argparse.ArgumentParser:
    """main.py's flags, one group per function below. The choices come from the registries
    of the modules that implement them (one source)."""
    from neuromamba.spec import recipe_names

    p = CommandParser(
        prog=prog_for("main.py", "train"),
        description="NeuroMamba: autoregressive pretraining and fine-tuning on 4D fMRI.",
        formatter_class=HelpFormatter)
    p.add_argument("--config", type=str, default=None,
                   help="YAML file of flag defaults (keys are flag names without '--'); "
                        "flags given on the command line win")
    p.add_argument("--recipe", default=None,
                   help=f"named training recipe, configs/recipes/NAME.yaml ({', '.join(recipe_names())}"
                        "), or a YAML file of flag values; default: paper. Flags and --config win "
                        "over it, and so does a checkpoint being resumed or fine-tuned")

    _model_flags(p)
    _objective_flags(p)
    _data_flags(p)
    _finetuning_flags(p)
    _optimisation_flags(p)
    _hardware_flags(p)
    _run_flags(p)
    return fill_missing_help(p)


def _model_flags(p: argparse.ArgumentParser) -> None:
    from neuromamba.models.embedding import POS_EMBEDDINGS
    from neuromamba.models.variants import VARIANTS
    from neuromamba.spec import PAPER_DEFAULTS, show

    g = p.add_argument_group("model")
    g.add_argument("--model", default="fmamba", choices=["fmamba"])
    g.add_argument("--model_size", default=None, choices=list(VARIANTS),
                   help="named variant (small C=128, base C=192, medium C=256, large C=384); "
                        "without it --embed_dim picks the variant of that width, and with neither "
                        "it is base; explicit --embed_dim/--depth/--d_state/--headdim override it")
    g.add_argument("--embed_dim", type=int, default=None,
                   help="token width C (channels); alone it selects the variant of that width, "
                        "another width gets depth 12, d_state C/4, headdim C")
    g.add_argument("--depth", type=int, default=None, help="number of Mamba2 blocks (variants: 12)")
    g.add_argument("--d_state", type=int, default=None,
                   help="SSM state size per head (variants: C/4)")
    g.add_argument("--headdim", type=int, default=None,
                   help="channels per Mamba2 head; must divide 2C (variants: C, i.e. 2 heads)")
    g.add_argument("--patch_size", type=int, nargs=4, default=None, metavar=("D", "H", "W", "T"),
                   help=f"token size in voxels and frames (paper: {show(PAPER_DEFAULTS['patch_size'])})")
    g.add_argument("--img_size", type=int, nargs=4, default=None, metavar=("D", "H", "W", "T"),
                   help="clip size: the data's grid D H W in voxels and T frames read from the "
                        "run, under every recipe (an input with a static token adds it on top) "
                        f"(paper: {show(PAPER_DEFAULTS['img_size'])})")
    g.add_argument("--pos_embedding", default=None, choices=list(POS_EMBEDDINGS),
                   help=f"positional encoding of the token grid (paper: {PAPER_DEFAULTS['pos_embedding']})")
    g.add_argument("--drop_rate", type=float, default=0.0)
    g.add_argument("--chunk_size", type=int, default=CHUNK_SIZE, help="SSD chunk length of the Mamba2 scan")
    g.add_argument("--grad_checkpointing", action="store_true",
                   help="recompute block activations in backward (less memory, ~30%% slower)")

def _objective_flags(p: argparse.ArgumentParser) -> None:
    from neuromamba.models.embedding import BACKGROUND_REMOVALS, EVAL_BACKGROUND_REMOVALS

    g = p.add_argument_group("objective and tokens")
    g.add_argument("--pretraining", action="store_true", help="autoregressive pretraining (no labels)")
    g.add_argument("--use_autoregressive", action="store_true",
                   help="next-token prediction objective (the only pretraining objective; implied by --pretraining)")
    g.add_argument("--calc_loss_without_background", action="store_true",
                   help="drop background tokens before the blocks (same as --background_removal batch)")
    g.add_argument("--background_removal", default=None, choices=list(BACKGROUND_REMOVALS),
                   help="none: keep all tokens; batch: the original's batch-wide mask; "
                        "packed: per-sample masks packed into one sequence")
    g.add_argument("--eval_background_removal", default="packed", choices=list(EVAL_BACKGROUND_REMOVALS),
                   help="how validation/test/predict drop background tokens when training does: "
                        "packed (default): each clip with its own mask, so a clip's output never "
                        "depends on its batch-mates, the eval batch size or the GPU count; batch: "
                        "the original's batch-wide rule")

def _data_flags(p: argparse.ArgumentParser) -> None:
    from neuromamba.data.dummy import LABEL_LEVELS
    from neuromamba.data.labels import TASK_TYPES
    from neuromamba.data.samplers import COHORT_SAMPLINGS
    from neuromamba.data.scaling import SCALING_METHODS
    from neuromamba.spec import PAPER_DEFAULTS
    from neuromamba.training.metrics import EVAL_LEVELS

    g = p.add_argument_group("data")
    g.add_argument("--dataset_name", nargs="+", default=["Dummy"],
                   help="one name, or several for multi-cohort pretraining (one --image_path each)")
    g.add_argument("--image_path", nargs="+", default=None,
                   help="folder of preprocessed HDF5 runs ({subject}/{run}.h5), one per --dataset_name")
    g.add_argument("--cohort_sampling", default="proportional", choices=list(COHORT_SAMPLINGS),
                   help="multi-cohort training: clips in proportion to cohort size, or uniform per cohort")
    g.add_argument("--input_scaling_method", default=None, choices=list(SCALING_METHODS),
                   help="load-time scaling of the raw values (paper: "
                        f"{PAPER_DEFAULTS['input_scaling_method']}; with --load_model_path or "
                        "--resume_ckpt_path, the checkpoint's own input, the paper's for released "
                        "files); see ADDING_YOUR_DATASET.md, section 6")
    g.add_argument("--stride_within_seq", type=int, default=None, help="frame step inside a clip (paper: 1)")
    g.add_argument("--stride_between_seq", type=float, default=None,
                   help="step between consecutive clip starts in clip lengths (sequence_length x "
                        "stride_within_seq frames), as in the original: 1 tiles the run without "
                        "overlap, 0.5 overlaps clips by half")
    g.add_argument("--train_split", type=float, default=0.8)
    g.add_argument("--val_split", type=float, default=0.1)
    g.add_argument("--split_file", default=None, help="reuse this subject split file")
    g.add_argument("--label_csv", nargs="+", default=None,
                   help="label table(s), one per --dataset_name or one for all (default: the CSV "
                        "in the dataset's metadata/ folder)")
    g.add_argument("--subject_column", default="subject")
    g.add_argument("--target_column", default=None)
    g.add_argument("--downstream_task", default=None,
                   help="the label to predict, e.g. sex, age, intelligence (a cohort's named task) "
                        "or any --label_csv column; omitted with --pretraining")
    g.add_argument("--downstream_task_type", default=None, choices=list(TASK_TYPES),
                   help="classification or regression (default: from --downstream_task: sex is "
                        "classification, age and intelligence regression, others classification)")
    g.add_argument("--batch_size", type=int, default=4)
    g.add_argument("--eval_batch_size", type=int, default=None,
                   help="clips per validation/test batch (default: --batch_size); results do not depend on it")
    g.add_argument("--num_workers", type=int, default=0)
    g.add_argument("--dummy_num_subjects", type=int, default=40)
    g.add_argument("--dummy_num_frames", type=int, default=None)
    g.add_argument("--dummy_num_runs", type=int, default=1)
    g.add_argument("--dummy_num_classes", type=int, default=2)
    g.add_argument("--dummy_label_level", default="subject", choices=list(LABEL_LEVELS),
                   help="run: a task-state label per run (use with --eval_level run)")
    g.add_argument("--eval_level", default="subject", choices=list(EVAL_LEVELS),
                   help="unit whose clip predictions are averaged before val/test metrics")

def _finetuning_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--load_model_path", default=None,
                   help="pretrained backbone: released .pt, this project's .ckpt or a DeepSpeed folder")
    g.add_argument("--allow_pickle", action="store_true",
                   help="allow unpickling arbitrary objects from --load_model_path (only for files you trust)")
    g.add_argument("--clf_head_version", default=None,
                   help=f"task head: linear (the paper's default: mean over the kept tokens), "
                        "mamba (the paper's other head: 3 Mamba2 blocks, last token), attention "
                        "(this project's learned attention pooling; --recipe tuned) or connectivity "
                        "(correlations between parcels' time courses, read sparsely: for labels carried "
                        "by coupled regions, on a frozen pretrained backbone), or auto (with "
                        "--freeze_feature_extractor: linear, attention and connectivity trained on the "
                        "same frozen features, the best on validation kept; --recipe tuned with "
                        "--load_model_path)")
    g.add_argument("--freeze_feature_extractor", action="store_true",
                   help="freeze the pretrained backbone and train only the head")
    g.add_argument("--prompt_tuning", action="store_true",
                   help="freeze the backbone; train --prompt_len prompt tokens and the head")
    g.add_argument("--prompt_len", type=int, default=8)
    g.add_argument("--label_smoothing", type=float, default=None,
                   help="classification only: cross-entropy label smoothing in [0, 1) "
                        f"(default {DEFAULT_LABEL_SMOOTHING}, the original's)")

def _optimisation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--learning_rate", type=float, default=1e-4)
    g.add_argument("--weight_decay", type=float, default=1e-2)
    g.add_argument("--warmup_ratio", type=float, default=0.05)
    g.add_argument("--min_lr_ratio", type=float, default=0.01)
    g.add_argument("--cycle", type=float, default=1.0,
                   help="cosine cycle length as a fraction of the run (1.0: no restarts)")
    g.add_argument("--gamma", type=float, default=1.0, help="peak lr multiplier per restart")
    g.add_argument("--clip_grad_norm", type=float, default=None)
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--precision", default="32", choices=list(PRECISIONS))

def _hardware_flags(p: argparse.ArgumentParser) -> None:
    from neuromamba.training.strategies import STRATEGY_BUILDERS

    g = p.add_argument_group("hardware")
    g.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"])
    g.add_argument("--devices", default="auto", help="'auto', a count, or a comma list of ids")
    g.add_argument("--num_nodes", type=int, default=1)
    g.add_argument("--strategy", default="auto", choices=list(STRATEGY_BUILDERS))

def _run_flags(p: argparse.ArgumentParser) -> None:
    from neuromamba.training.loggers import EXTRA_LOGGERS

    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--max_epochs", type=int, default=10)
    g.add_argument("--max_steps", type=int, default=-1)
    for split in ("train", "val", "test"):
        g.add_argument(f"--limit_{split}_batches", default=None,
                       help="a count of batches (e.g. 20) or a fraction (e.g. 0.25) per epoch")
    g.add_argument("--check_val_every_n_epoch", type=int, default=1)
    g.add_argument("--log_every_n_steps", type=int, default=10)
    g.add_argument("--num_sanity_val_steps", type=int, default=0)
    g.add_argument("--deterministic", action="store_true")
    g.add_argument("--output_dir", default="runs", help="parent folder of the run folder")
    g.add_argument("--run_name", default=None, help="run folder name (default: from task, size, seed, job id/time)")
    g.add_argument("--overwrite_run", action="store_true",
                   help="replace a finished run (one with a summary.json) in --output_dir/--run_name; "
                        "without it such a folder is refused, never overwritten")
    g.add_argument("--resume_ckpt_path", default=None,
                   help="continue a stopped run: its last.ckpt, its run folder, or 'last' with "
                        "--run_name (a requeued job's own folder)")
    g.add_argument("--test_only", action="store_true", help="only evaluate --test_ckpt_path on the test split")
    g.add_argument("--test_ckpt_path", default=None,
                   help="checkpoint evaluated by --test_only; its run's split file and clip "
                        "settings (--img_size, strides, --input_scaling_method) are used")
    g.add_argument("--override_checkpoint_settings", action="store_true",
                   help="--test_only: use this command's clip settings and split instead of the "
                        "checkpoint run's")
    g.add_argument("--monitor", default=None,
                   help="validation metric choosing the best checkpoint, e.g. auroc, balanced_acc, mse "
                        "(default: val loss; val/mse for regression)")
    g.add_argument("--monitor_mode", default=None, choices=["min", "max"],
                   help="default: max for auroc/acc/balanced_acc/pearson_r, else min")
    g.add_argument("--loggername", default="csv", choices=list(EXTRA_LOGGERS),
                   help="metrics.csv is always written; this adds wandb or tensorboard")
    g.add_argument("--project_name", default="neuromamba")
    g.add_argument("--wandb_config", default=None, help="YAML with entity/project/mode/tags (see configs/)")
    g.add_argument("--no_progress_bar", action="store_true")
    g.add_argument("--ignore_memory_estimate", action="store_true",
                   help="start even when the step's estimated memory is over twice what is free")
    g.add_argument("--dry_run", action="store_true",
                   help="resolve every setting, build the model and estimate a step's memory at "
                        "all tokens, then exit: no data read, no hardware checked, nothing written "
                        "(checks a GPU or cluster command anywhere)")


def _yaml_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    loaded = read_yaml_mapping(path, "--config")
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in loaded if k.replace("-", "_") not in known or k == "config")
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}")
    return typed_file_values(parser, {k.replace("-", "_"): v for k, v in loaded.items()},
                             f"--config {path}")


_ON_OFF = (argparse._StoreTrueAction, argparse._StoreFalseAction)


def typed_file_values(parser: argparse.ArgumentParser, values: dict, source: str) -> dict:
    """Flag values from a YAML file (``--recipe``, ``--config``) checked and converted as the
    command line converts them, or refused in one line naming the file and the key. An on/off
    flag takes YAML's true/false only: the quoted "false" is a string, which Python reads as on;
    a number must be of the flag's type (``max_epochs: 2.5`` and ``learning_rate: abc`` are
    refused, ``max_epochs: true`` is not read as 1)."""
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None or value is None:
            out[key] = value
            continue
        if isinstance(action, _ON_OFF):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {key}: {value!r} is not true or false (write "
                                 f"`{key}: true` or `{key}: false`, unquoted)")
            out[key] = value
            continue
        many = action.nargs not in (None, "?")
        items = value if many and isinstance(value, (list, tuple)) else [value]
        if many and not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: {key}: {value!r} must be a list (e.g. `{key}: [..]`)")
        out[key] = [_typed_value(action, item, key, source) for item in items] if many else \
            _typed_value(action, value, key, source)
    return out


def _typed_value(action, value, key: str, source: str):
    kind = action.type
    if kind in (int, float):
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or \
                (kind is int and isinstance(value, float) and not integral):
            raise ValueError(f"{source}: {key}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    if kind is not None and isinstance(value, str):
        try:
            return kind(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"{source}: {key}: {value!r} is not a valid value") from None
    if kind is int and isinstance(value, float):
        return int(value)
    return value


def _check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    # argparse checks `choices` only for values typed on the command line, not for defaults
    # that came from --config.
    for action in parser._actions:
        if action.choices is None or not action.dest or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is not None and value not in action.choices:
            raise ValueError(f"--{action.dest} {value!r} is not one of {list(action.choices)}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and validate; raises ValueError/FileNotFoundError with one readable sentence.

    Precedence: the command line > --config > the checkpoint (spec settings only) > --recipe >
    the defaults; the spec settings are resolved in :mod:`neuromamba.spec`."""
    from neuromamba.spec import SPEC_KEYS, load_recipe

    parser = build_parser()
    flag_defaults = {a.dest: parser.get_default(a.dest) for a in parser._actions}
    pre, _ = parser.parse_known_args(argv)
    recipe = load_recipe(pre.recipe)
    if pre.load_model_path and not pre.pretraining:  # the recipe's fine-tuning values apply
        recipe = recipe.for_finetuning()
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in recipe.values if k not in known)
    if unknown:
        raise ValueError(f"--recipe {recipe.path}: unknown keys {unknown}")
    # The recipe's other flags are defaults under --config; its spec settings sit under a
    # checkpoint's, so they are resolved with the spec, not here.
    recipe = dataclasses.replace(
        recipe, values=typed_file_values(parser, recipe.values, f"--recipe {recipe.path}"))
    parser.set_defaults(**{k: v for k, v in recipe.values.items() if k not in SPEC_KEYS + ("model_size",)})
    if pre.config:
        parser.set_defaults(**_yaml_defaults(parser, pre.config))
    args = parser.parse_args(argv)
    _check_choices(parser, args)
    return finalize(args, recipe, flag_defaults)


def parse_run(argv: Optional[Sequence[str]] = None) -> RunConfig:
    """``parse_args``, then the typed run that ``training.runner.run`` takes."""
    return run_config_of(parse_args(argv))
