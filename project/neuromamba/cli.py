"""Command-line flags of ``project/main.py``: definitions, --config YAML defaults, validation.

The flag names and meanings of the original NeuroMamba README are kept (``--pretraining
--use_autoregressive --calc_loss_without_background --clf_head_version ...``). ``parse_args``
returns a validated ``argparse.Namespace`` with derived fields filled in (model sizes from
``--model_size``, ``background_removal``, ``eval_batch_size`` ...); any bad or contradictory
combination raises ``ValueError`` with one sentence, which ``main`` prints as one line.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from neuromamba.fileio import read_yaml_mapping
from neuromamba.flag_help import HelpFormatter, fill_missing_help

# Classification's cross-entropy label smoothing in the original (SPEC §7).
DEFAULT_LABEL_SMOOTHING = 0.1
# The README's short precision names and Lightning 2.x's own spellings.
PRECISIONS = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true",
              "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed", "32-true": "32-true",
              "bf16-true": "bf16-true"}


def _head_names() -> list[str]:
    from neuromamba.models.heads import HEADS
    return sorted(HEADS)


def build_parser() -> argparse.ArgumentParser:
    # The choices come from the registries of the modules that implement them (one source).
    from neuromamba.data.dummy import LABEL_LEVELS
    from neuromamba.data.labels import TASK_TYPES
    from neuromamba.data.samplers import COHORT_SAMPLINGS
    from neuromamba.data.scaling import SCALING_METHODS
    from neuromamba.models.embedding import BACKGROUND_REMOVALS, EVAL_BACKGROUND_REMOVALS, POS_EMBEDDINGS
    from neuromamba.spec import PAPER_DEFAULTS, recipe_names, show
    from neuromamba.models.variants import VARIANTS
    from neuromamba.training.loggers import EXTRA_LOGGERS
    from neuromamba.training.metrics import EVAL_LEVELS
    from neuromamba.training.strategies import STRATEGY_BUILDERS

    p = argparse.ArgumentParser(
        prog="main.py",
        description="NeuroMamba: autoregressive pretraining and fine-tuning on 4D fMRI.",
        formatter_class=HelpFormatter)
    p.add_argument("--config", type=str, default=None,
                   help="YAML file of flag defaults (keys are flag names without '--'); "
                        "flags given on the command line win")
    p.add_argument("--recipe", default=None,
                   help=f"named training recipe, configs/recipes/NAME.yaml ({', '.join(recipe_names())}"
                        "), or a YAML file of flag values; default: paper. Flags and --config win "
                        "over it, and so does a checkpoint being resumed or fine-tuned")

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
                   help="clip size: the data's grid D H W in voxels and T frames "
                        f"(paper: {show(PAPER_DEFAULTS['img_size'])})")
    g.add_argument("--pos_embedding", default=None, choices=list(POS_EMBEDDINGS),
                   help=f"positional encoding of the token grid (paper: {PAPER_DEFAULTS['pos_embedding']})")
    g.add_argument("--drop_rate", type=float, default=0.0)
    g.add_argument("--chunk_size", type=int, default=256, help="SSD chunk length of the Mamba2 scan")
    g.add_argument("--grad_checkpointing", action="store_true",
                   help="recompute block activations in backward (less memory, ~30%% slower)")

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

    g = p.add_argument_group("fine-tuning")
    g.add_argument("--load_model_path", default=None,
                   help="pretrained backbone: released .pt, this project's .ckpt or a DeepSpeed folder")
    g.add_argument("--allow_pickle", action="store_true",
                   help="allow unpickling arbitrary objects from --load_model_path (only for files you trust)")
    g.add_argument("--clf_head_version", default=None,
                   help=f"task head: linear (the paper's default: mean over the kept tokens), "
                        "mamba (the paper's other head: 3 Mamba2 blocks, last token) or attention "
                        "(this project's learned attention pooling; --recipe tuned)")
    g.add_argument("--freeze_feature_extractor", action="store_true",
                   help="freeze the pretrained backbone and train only the head")
    g.add_argument("--prompt_tuning", action="store_true",
                   help="freeze the backbone; train --prompt_len prompt tokens and the head")
    g.add_argument("--prompt_len", type=int, default=8)
    g.add_argument("--label_smoothing", type=float, default=None,
                   help="classification only: cross-entropy label smoothing in [0, 1) "
                        f"(default {DEFAULT_LABEL_SMOOTHING}, the original's)")

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

    g = p.add_argument_group("hardware")
    g.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"])
    g.add_argument("--devices", default="auto", help="'auto', a count, or a comma list of ids")
    g.add_argument("--num_nodes", type=int, default=1)
    g.add_argument("--strategy", default="auto", choices=list(STRATEGY_BUILDERS))

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
    g.add_argument("--resume_ckpt_path", default=None, help="continue a killed run from its last.ckpt")
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
    return fill_missing_help(p)


def _yaml_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    loaded = read_yaml_mapping(path, "--config")
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in loaded if k.replace("-", "_") not in known or k == "config")
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}")
    return {k.replace("-", "_"): v for k, v in loaded.items()}


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
    pre, _ = parser.parse_known_args(argv)
    recipe = load_recipe(pre.recipe)
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in recipe.values if k not in known)
    if unknown:
        raise ValueError(f"--recipe {recipe.path}: unknown keys {unknown}")
    # The recipe's other flags are defaults under --config; its spec settings sit under a
    # checkpoint's, so they are resolved with the spec, not here.
    parser.set_defaults(**{k: v for k, v in recipe.values.items() if k not in SPEC_KEYS + ("model_size",)})
    if pre.config:
        parser.set_defaults(**_yaml_defaults(parser, pre.config))
    args = parser.parse_args(argv)
    _check_choices(parser, args)
    return finalize(args, recipe)


def _parse_devices(value):
    if isinstance(value, int) or value == "auto":
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if "," in text:
        return [int(v) for v in text.split(",") if v.strip()]
    raise ValueError(f"--devices {value!r}: expected 'auto', a count, or a comma list of device ids")


def _parse_limit(flag: str, value):
    """Lightning's meaning: an int counts batches, a float is a fraction of the epoch."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        number = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"--{flag} {value!r}: expected a batch count or a fraction") from None
    if number < 0 or (isinstance(number, float) and number > 1):
        raise ValueError(f"--{flag} {value!r}: a fraction must be in [0, 1], a count >= 0")
    return number


def finalize(args: argparse.Namespace, recipe=None) -> argparse.Namespace:
    """Fill derived fields, resolve the run spec once and reject contradictory flags."""
    from neuromamba.spec import DIM_KEYS, load_recipe

    recipe = recipe or load_recipe(getattr(args, "recipe", None))
    for key in DIM_KEYS:
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise ValueError(f"--{key} must be positive, got {getattr(args, key)}")

    # One cohort is passed on as a plain string; several stay a list (multi-cohort pretraining).
    for flag in ("dataset_name", "image_path", "label_csv"):
        value = getattr(args, flag)
        if isinstance(value, (list, tuple)):
            setattr(args, flag, list(value)[0] if len(value) == 1 else list(value))
    cohorts = args.dataset_name if isinstance(args.dataset_name, list) else [args.dataset_name]
    # Unknown names fail here, before a run folder is made (the dataset registry's message).
    from neuromamba.data.datasets import get_dataset_info

    synthetic = {name: get_dataset_info(name).synthetic for name in cohorts}
    paths = args.image_path if isinstance(args.image_path, list) else [args.image_path]
    if len(cohorts) > 1 and len(paths) != len(cohorts):
        raise ValueError(f"--image_path needs one folder per --dataset_name ({len(cohorts)} given)")

    # Unset, the background rule is resolved with the spec (a resumed checkpoint's, else none).
    if args.calc_loss_without_background and args.background_removal in (None, "batch"):
        args.background_removal = "batch"
    elif args.calc_loss_without_background and args.background_removal == "none":
        raise ValueError("--calc_loss_without_background contradicts --background_removal none")

    if args.use_autoregressive and not args.pretraining:
        raise ValueError("--use_autoregressive is the pretraining objective; add --pretraining or drop it")
    if args.pretraining:
        if args.downstream_task or args.downstream_task_type:
            raise ValueError("--pretraining learns without labels; drop --downstream_task/--downstream_task_type")
        if args.freeze_feature_extractor or args.prompt_tuning:
            raise ValueError("--freeze_feature_extractor/--prompt_tuning are fine-tuning modes, not for --pretraining")
        if args.label_smoothing:
            raise ValueError("--label_smoothing applies to classification, not to --pretraining")
        args.label_smoothing = 0.0
        args.task = "pretraining"
    else:
        from neuromamba.data.labels import DEFAULT_TASK_TYPES

        if args.downstream_task is None:
            if cohorts != ["Dummy"]:
                raise ValueError("fine-tuning needs --downstream_task (e.g. sex, age) or --pretraining")
            args.downstream_task = "age" if args.downstream_task_type == "regression" else "sex"
        # sex -> classification, age/intelligence -> regression unless the flag says otherwise
        args.downstream_task_type = (args.downstream_task_type
                                     or DEFAULT_TASK_TYPES.get(args.downstream_task, "classification"))
        args.task = args.downstream_task_type
        if args.task == "regression" and args.label_smoothing:
            raise ValueError("--label_smoothing applies to classification, not to regression")
        if args.label_smoothing is None:
            args.label_smoothing = DEFAULT_LABEL_SMOOTHING if args.task == "classification" else 0.0

    if args.freeze_feature_extractor and not args.load_model_path:
        raise ValueError("--freeze_feature_extractor needs a pretrained backbone from --load_model_path")
    if args.prompt_tuning and not args.load_model_path:
        raise ValueError("--prompt_tuning needs a pretrained backbone from --load_model_path")
    if args.prompt_tuning and args.prompt_len < 1:
        raise ValueError(f"--prompt_len must be >= 1, got {args.prompt_len}")
    if args.load_model_path and not Path(args.load_model_path).exists():
        raise FileNotFoundError(f"--load_model_path {args.load_model_path}: no such file or folder")

    if args.test_only and not args.test_ckpt_path:
        raise ValueError("--test_only needs --test_ckpt_path (a checkpoint of this project)")
    if args.test_ckpt_path and not args.test_only:
        raise ValueError("--test_ckpt_path is used with --test_only (after training the best checkpoint is tested)")
    if args.test_only and args.resume_ckpt_path:
        raise ValueError("--test_only and --resume_ckpt_path contradict each other")
    for flag in ("resume_ckpt_path", "test_ckpt_path", "split_file", "label_csv", "config", "wandb_config"):
        value = getattr(args, flag)
        for path in (value if isinstance(value, list) else [value]):
            if path and not Path(path).exists():
                raise FileNotFoundError(f"--{flag} {path}: no such file")
    from neuromamba.checkpoints import require_torch_archive

    for flag in ("resume_ckpt_path", "test_ckpt_path", "load_model_path"):
        if getattr(args, flag):  # a folder (DeepSpeed) is checked when it is read
            require_torch_archive(getattr(args, flag), f"--{flag}")
    if args.wandb_config and args.loggername == "wandb":  # read again when the logger is built
        read_yaml_mapping(args.wandb_config, "--wandb_config")
    for name, path in zip(cohorts, paths if len(paths) == len(cohorts) else paths * len(cohorts)):
        if synthetic[name]:
            continue
        if not path:
            raise ValueError(f"--dataset_name {name} needs --image_path")
        if not Path(path).exists():
            raise FileNotFoundError(f"--image_path {path}: no such folder")
    if args.dummy_label_level == "run" and args.eval_level == "subject" and not args.pretraining:
        raise ValueError("--dummy_label_level run gives each run its own label; add --eval_level run")

    positive = ("batch_size", "num_nodes", "gradient_accumulation_steps",
                "max_epochs", "dummy_num_subjects", "check_val_every_n_epoch",
                "chunk_size", "dummy_num_runs")
    for flag in positive:
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    if args.eval_batch_size < 1:
        raise ValueError(f"--eval_batch_size must be >= 1, got {args.eval_batch_size}")
    if args.dummy_num_classes < 2:
        raise ValueError(f"--dummy_num_classes must be >= 2, got {args.dummy_num_classes}")
    if args.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")
    import math

    for flag in ("learning_rate", "weight_decay", "warmup_ratio", "min_lr_ratio", "cycle", "gamma",
                 "label_smoothing", "drop_rate", "train_split", "val_split"):
        value = getattr(args, flag)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{flag} must be a finite number, got {value}")
    if args.clip_grad_norm is not None and not math.isfinite(args.clip_grad_norm):
        raise ValueError(f"--clip_grad_norm must be a finite number, got {args.clip_grad_norm}")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2^32), got {args.seed}")
    if not 0.0 <= args.drop_rate < 1.0:
        raise ValueError(f"--drop_rate must be in [0, 1), got {args.drop_rate}")
    if args.learning_rate <= 0 or args.weight_decay < 0:
        raise ValueError("--learning_rate must be > 0 and --weight_decay >= 0")
    if not 0.0 <= args.warmup_ratio < 1.0:
        raise ValueError(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        raise ValueError(f"--min_lr_ratio must be in [0, 1], got {args.min_lr_ratio}")
    if not 0.0 < args.cycle <= 1.0:
        raise ValueError(f"--cycle is a fraction of the run in (0, 1], got {args.cycle}")
    if args.gamma <= 0:
        raise ValueError(f"--gamma must be > 0, got {args.gamma}")
    if not 0.0 <= args.label_smoothing < 1.0:
        raise ValueError(f"--label_smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.clip_grad_norm is not None and args.clip_grad_norm <= 0:
        raise ValueError(f"--clip_grad_norm must be > 0, got {args.clip_grad_norm}")
    if not (0 < args.train_split < 1 and 0 <= args.val_split < 1 and args.train_split + args.val_split < 1):
        raise ValueError(f"--train_split {args.train_split} and --val_split {args.val_split} must leave a test split")

    for split in ("train", "val", "test"):
        flag = f"limit_{split}_batches"
        setattr(args, flag, _parse_limit(flag, getattr(args, flag)))
    args.devices = _parse_devices(args.devices)
    args.lightning_precision = PRECISIONS[args.precision]
    # bf16 means fp32 weights (A_log, dt_bias, D and the norms included) with bf16 autocast, under
    # every strategy (SPEC §6). Lightning's "bf16-mixed" is that for DDP; its DeepSpeed precision
    # would keep bf16 weights and cast every batch tensor (clips, targets) to bf16, so under
    # DeepSpeed the Trainer runs "32-true" and the module applies the autocast itself.
    args.autocast_dtype = None
    if args.strategy.startswith("deepspeed") and args.lightning_precision == "bf16-mixed":
        args.lightning_precision, args.autocast_dtype = "32-true", "bfloat16"
    if args.strategy.startswith("deepspeed") and args.accelerator == "cpu":
        raise ValueError(f"--strategy {args.strategy} needs CUDA GPUs; use --strategy ddp or auto on CPU")
    resolve_run_spec(args, recipe)
    return args


def _explicit_spec(args: argparse.Namespace) -> dict:
    from neuromamba.spec import SPEC_KEYS

    return {**{k: getattr(args, k, None) for k in SPEC_KEYS}, "model_size": args.model_size}


def _checkpoint_for_run(args):
    """(path, role) of the checkpoint that fixes this run's spec, if any."""
    if args.resume_ckpt_path:
        return args.resume_ckpt_path, "resume"
    if args.test_only:
        return args.test_ckpt_path, "test"
    if args.load_model_path:
        return args.load_model_path, "finetune"
    return None, None


def resolve_run_spec(args: argparse.Namespace, recipe) -> None:
    """Resolve the spec settings once (neuromamba.spec's precedence) and write them, the
    recipe, the departures from the paper and the spec itself into ``args``: everything
    downstream, args.yaml and every checkpoint read them from there. Lines to announce at
    start go to ``args._announce``; the checkpoint read goes to ``args._checkpoint``."""
    from neuromamba.spec import (BACKBONE_KEYS, INPUT_KEYS, SPEC_KEYS, conflicts,
                                 read_checkpoint_settings, resolve, show)
    from neuromamba.training.run_checks import check_resume, check_test_task

    explicit = _explicit_spec(args)
    path, role = _checkpoint_for_run(args)
    checkpoint = read_checkpoint_settings(path, args.allow_pickle) if path else None
    keys = BACKBONE_KEYS if role == "finetune" else SPEC_KEYS
    first = role == "test" and not args.override_checkpoint_settings
    skip = ("clf_head_version",) if args.pretraining else ()
    resolution = resolve(explicit, checkpoint, keys, recipe, checkpoint_first=first, skip_departures=skip)
    args._checkpoint = checkpoint
    if role == "resume":  # another task is the more basic mismatch: say it first
        check_resume(args)
    elif role == "test":
        check_test_task(args)
    notes = []
    if checkpoint is not None:
        clashes = conflicts(explicit, checkpoint, keys, resolution.values)
        if role == "resume" and clashes:
            raise ValueError(f"--resume_ckpt_path {path}: the run was made with other settings than "
                             f"these flags give: {'; '.join(clashes)}. A resumed run keeps its input "
                             f"and model: drop these flags (the checkpoint's values are used)")
        if role == "test" and first:
            notes += [f"--test_only uses the checkpoint's {c}" for c in clashes
                      if c.split()[0][2:] in INPUT_KEYS]
        if role == "finetune":
            notes += [f"{path} was pretrained on {c}; give the checkpoint's value to fine-tune on "
                      f"what the backbone learned" for c in clashes if c.startswith("--input_scaling_method")]
        # The checkpoint outranks the recipe: say so where they disagree.
        notes += [f"--{k} {show(resolution.values[k])} from {path} (recipe {recipe.name}: "
                  f"{show(recipe.values[k])})" for k in keys
                  if resolution.sources.get(k) == "checkpoint" and recipe.values.get(k) is not None
                  and recipe.values[k] != resolution.values[k]]
    for key, value in resolution.values.items():
        setattr(args, key, value)
    _check_spec_values(args)
    _refuse_leaking_pretraining(args)
    departures = resolution.departures + _recipe_flag_departures(args, recipe)
    args.recipe = resolution.recipe
    args.departures = departures
    args.setting_sources = dict(resolution.sources)
    resolution.departures = departures
    args.spec = resolution.spec(getattr(args, "data_grid", None)).as_dict()
    args._announce = [resolution.announcement(), *notes]


def _recipe_flag_departures(args, recipe) -> list:
    """A recipe's non-spec flags (learning rate, epochs ...) that the run kept."""
    from neuromamba.spec import SPEC_KEYS, show

    defaults = build_parser()  # the flags' own defaults, before the recipe set its own
    return [f"{key} {show(value)} (default: {show(defaults.get_default(key))})"
            for key, value in sorted(recipe.values.items())
            if key not in SPEC_KEYS + ("model_size",) and getattr(args, key, None) == value
            and value != defaults.get_default(key)]


def _refuse_leaking_pretraining(args) -> None:
    """A pretraining target must never follow from the tokens before it."""
    from neuromamba.data.scaling import LEAK_FREE, get_scaling

    if args.pretraining and get_scaling(args.input_scaling_method).leaks_future:
        raise ValueError(f"--input_scaling_method {args.input_scaling_method} leaks the future into "
                         "pretraining (each voxel's mean over the clip includes the frames being "
                         "predicted); use voxel_demean (the run's per-voxel mean) or another of "
                         f"{list(LEAK_FREE)}")


def _check_spec_values(args) -> None:
    """Spec values may come from a recipe or a checkpoint, which argparse never checked."""
    from neuromamba.data.scaling import SCALING_METHODS
    from neuromamba.models.embedding import BACKGROUND_REMOVALS, POS_EMBEDDINGS

    for key, allowed in (("input_scaling_method", SCALING_METHODS), ("pos_embedding", POS_EMBEDDINGS),
                         ("background_removal", BACKGROUND_REMOVALS)):
        if getattr(args, key) not in allowed:
            raise ValueError(f"--{key} {getattr(args, key)!r} is not one of {sorted(allowed)}")
    heads = _head_names()
    if not args.pretraining and args.clf_head_version not in heads:
        raise ValueError(f"--clf_head_version {args.clf_head_version!r} is not one of {heads}")
    if (2 * args.embed_dim) % args.headdim:
        raise ValueError(f"--headdim {args.headdim} must divide 2 x --embed_dim = {2 * args.embed_dim} "
                         "(Mamba2 heads split the expanded width)")
    img, patch = list(args.img_size), list(args.patch_size)
    if len(img) != 4 or len(patch) != 4 or any(int(v) < 1 for v in img + patch):
        raise ValueError(f"--img_size {img} and --patch_size {patch} must be 4 positive numbers")
    if any(i % q for i, q in zip(img, patch)):
        raise ValueError(f"--img_size {img} is not divisible by --patch_size {patch} in every axis")
    if args.stride_within_seq < 1:
        raise ValueError(f"--stride_within_seq must be >= 1, got {args.stride_within_seq}")
    import math

    if not (math.isfinite(args.stride_between_seq) and args.stride_between_seq > 0):
        raise ValueError(f"--stride_between_seq must be > 0 (clip lengths), got {args.stride_between_seq}")


def check_hardware(args: argparse.Namespace) -> None:
    """What the flags ask of this machine (checked when a run starts, not when flags parse)."""
    import torch

    wants_gpu = args.accelerator in ("gpu", "cuda") or args.strategy.startswith("deepspeed")
    if wants_gpu and not torch.cuda.is_available():
        what = f"--strategy {args.strategy}" if args.strategy.startswith("deepspeed") else \
            f"--accelerator {args.accelerator}"
        raise ValueError(f"{what} needs a CUDA GPU and this machine has none visible; use "
                         f"--accelerator cpu (and --strategy auto or ddp)")


def args_to_dict(args: argparse.Namespace) -> dict:
    """Plain, YAML/`weights_only`-friendly copy of the namespace."""
    out = {}
    for key, value in sorted(vars(args).items()):
        if key.startswith("_"):  # run-time companions (notes, the checkpoint read), not settings
            continue
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out
