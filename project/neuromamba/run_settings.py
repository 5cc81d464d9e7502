"""How ``project/main.py``'s flags become one run's settings: validation, derived fields, and
the run spec resolved once (:mod:`neuromamba.spec`'s precedence: flag > checkpoint > recipe >
paper). Any bad or contradictory combination raises ``ValueError`` with one sentence, which
``main`` prints as one line. ``neuromamba.cli`` only declares the flags."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import neuromamba.machine as machine
from neuromamba.fileio import read_yaml_mapping
from neuromamba.run_config import RunConfig, RunContext


RUNTIME_FIELDS = ("run_context",)  # on the namespace, but not settings

# Classification's cross-entropy label smoothing in the original (SPEC §7).
DEFAULT_LABEL_SMOOTHING = 0.1
# The README's short precision names and Lightning 2.x's own spellings.
PRECISIONS = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true",
              "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed", "32-true": "32-true",
              "bf16-true": "bf16-true"}


def _head_names() -> list[str]:
    from neuromamba.models.heads import HEADS
    return sorted(HEADS)


def task_type_of_column(label_csv, column: str) -> tuple:
    """(classification|regression, the reason) of a label column, by data.labels.infer_task."""
    import pandas as pd

    from neuromamba.data.labels import infer_task, is_missing, read_label_frame

    paths = label_csv if isinstance(label_csv, list) else [label_csv]
    values = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--label_csv {path}: no such file")
        frame = read_label_frame(path)  # the same reading as the labels themselves (CSV or TSV)
        if column not in frame.columns:
            raise ValueError(f"--target_column {column!r} is not a column of --label_csv {path} "
                             f"(columns: {list(frame.columns)})")
        values.append(frame[column][~frame[column].map(is_missing)])
    series = pd.concat(values)
    task = infer_task(series.tolist())
    kind = "number" if pd.to_numeric(series, errors="coerce").notna().all() else "string"
    if kind == "number" and task == "classification":
        kind = "integer"
    return task, f"--target_column {column}: {series.nunique()} distinct {kind} values -> {task}"


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


def finalize(args: argparse.Namespace, recipe=None, flag_defaults=None) -> argparse.Namespace:
    """Fill derived fields, resolve the run spec once and reject contradictory flags: one
    validator per group of flags, in this order (the first problem found is the one said)."""
    from neuromamba.spec import load_recipe

    recipe = recipe or load_recipe(getattr(args, "recipe", None))
    args.run_context = context = RunContext()
    _check_model_dims(args)
    cohorts, paths, synthetic = _resolve_cohorts(args)
    _resolve_task(args, context, cohorts)
    _resolve_checkpoints(args, context)
    _check_data(args, cohorts, paths, synthetic)
    _check_training_numbers(args)
    _resolve_hardware(args)
    resolve_run_spec(args, recipe, flag_defaults or {})
    return args


def _check_model_dims(args) -> None:
    from neuromamba.spec import DIM_KEYS

    for key in DIM_KEYS:
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise ValueError(f"--{key} must be positive, got {getattr(args, key)}")


def _resolve_cohorts(args) -> tuple:
    """(cohort names, their image paths, which are synthetic); unknown names fail here, before
    a run folder is made."""
    # One cohort is passed on as a plain string; several stay a list (multi-cohort pretraining).
    for flag in ("dataset_name", "image_path", "label_csv"):
        value = getattr(args, flag)
        if isinstance(value, (list, tuple)):
            setattr(args, flag, list(value)[0] if len(value) == 1 else list(value))
    cohorts = args.dataset_name if isinstance(args.dataset_name, list) else [args.dataset_name]
    from neuromamba.data.datasets import get_dataset_info  # the registry's message for a typo

    synthetic = {name: get_dataset_info(name).synthetic for name in cohorts}
    paths = args.image_path if isinstance(args.image_path, list) else [args.image_path]
    if len(cohorts) > 1 and len(paths) != len(cohorts):
        raise ValueError(f"--image_path needs one folder per --dataset_name ({len(cohorts)} given)")
    return cohorts, paths, synthetic


def _resolve_task(args, context: RunContext, cohorts) -> None:
    """Pretraining or the downstream task and its type; the background rule; label smoothing."""
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

        inferred = None
        if args.downstream_task is None and args.target_column and args.label_csv:
            # The task follows from the column: what ADDING_YOUR_DATASET.md's "No code" promises.
            args.downstream_task = args.target_column
            if args.downstream_task_type is None:
                args.downstream_task_type, inferred = task_type_of_column(args.label_csv, args.target_column)
        if args.downstream_task is None:
            if cohorts != ["Dummy"]:
                raise ValueError("fine-tuning needs --downstream_task (e.g. sex, age), --target_column "
                                 "with --label_csv, or --pretraining")
            args.downstream_task = "age" if args.downstream_task_type == "regression" else "sex"
        # sex -> classification, age/intelligence -> regression unless the flag says otherwise
        args.downstream_task_type = (args.downstream_task_type
                                     or DEFAULT_TASK_TYPES.get(args.downstream_task, "classification"))
        if inferred:
            context.notes.append(inferred)
        args.task = args.downstream_task_type
        if args.task == "regression" and args.label_smoothing:
            raise ValueError("--label_smoothing applies to classification, not to regression")
        if args.label_smoothing is None:
            args.label_smoothing = DEFAULT_LABEL_SMOOTHING if args.task == "classification" else 0.0


def _resolve_checkpoints(args, context: RunContext) -> None:
    """Which checkpoint each flag names (a run folder stands for its checkpoint; `last` for a
    requeued job), that the files exist and are checkpoints; the fine-tuning modes need one."""
    if args.freeze_feature_extractor and not args.load_model_path:
        raise ValueError("--freeze_feature_extractor needs a pretrained backbone from --load_model_path")
    if args.prompt_tuning and not args.load_model_path:
        raise ValueError("--prompt_tuning needs a pretrained backbone from --load_model_path")
    if args.prompt_tuning and args.prompt_len < 1:
        raise ValueError(f"--prompt_len must be >= 1, got {args.prompt_len}")
    from neuromamba.checkpoints import checkpoint_path

    if args.resume_ckpt_path == "last":  # the run folder's newest state (a requeued job's line)
        if not args.run_name:
            raise ValueError("--resume_ckpt_path last needs --run_name (the run folder under --output_dir)")
        folder = Path(args.output_dir) / args.run_name
        args.resume_ckpt_path = str(folder)
        if not any((folder / "checkpoints" / name).exists() for name in ("last.ckpt", "best.ckpt")):
            # A job killed or preempted before its first checkpoint, then requeued: start over.
            args.resume_ckpt_path = None
            context.fresh_start = True
            context.notes.append(f"--resume_ckpt_path last: {folder} holds no checkpoint yet (the job "
                                 f"stopped before its first one); starting the run from the beginning")
    for flag, prefer in (("load_model_path", "best.ckpt"), ("resume_ckpt_path", "last.ckpt"),
                         ("test_ckpt_path", "best.ckpt")):
        if getattr(args, flag):  # a run folder stands for its checkpoint; a missing one is listed
            setattr(args, flag, checkpoint_path(getattr(args, flag), f"--{flag}", prefer))

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


def _check_data(args, cohorts, paths, synthetic) -> None:
    for name, path in zip(cohorts, paths if len(paths) == len(cohorts) else paths * len(cohorts)):
        if synthetic[name]:
            continue
        if not path:
            raise ValueError(f"--dataset_name {name} needs --image_path")
        if not Path(path).exists():
            raise FileNotFoundError(f"--image_path {path}: no such folder")
    if args.dummy_label_level == "run" and args.eval_level == "subject" and not args.pretraining:
        raise ValueError("--dummy_label_level run gives each run its own label; add --eval_level run")


def _check_training_numbers(args) -> None:
    """Counts, rates, ratios and splits in their ranges; evaluation batch and limits derived."""
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


def _resolve_hardware(args) -> None:
    """Devices, Lightning's precision name, the autocast dtype, DeepSpeed only where it runs."""
    args.devices = _parse_devices(args.devices)
    args.lightning_precision = PRECISIONS[args.precision]
    # bf16 means fp32 weights (A_log, dt_bias, D and the norms included) with bf16 autocast, under
    # every strategy (SPEC §6). Lightning's "bf16-mixed" is that for DDP; its DeepSpeed precision
    # would keep bf16 weights and cast every batch tensor (clips, targets) to bf16, so under
    # DeepSpeed the Trainer runs "32-true" and the module applies the autocast itself.
    args.autocast_dtype = None
    if args.strategy.startswith("deepspeed") and args.lightning_precision == "bf16-mixed":
        args.lightning_precision, args.autocast_dtype = "32-true", "bfloat16"
    if args.strategy.startswith("deepspeed") and args.accelerator == "cpu" and not machine.deepspeed_runs_on_cpu():
        raise ValueError(f"--strategy {args.strategy} needs CUDA GPUs; use --strategy ddp or auto on CPU")


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


def resolve_run_spec(args: argparse.Namespace, recipe, flag_defaults: dict) -> None:
    """Resolve the spec settings once (neuromamba.spec's precedence) and write them, the
    recipe, the departures from the paper and the spec itself into ``args``: everything
    downstream, args.yaml and every checkpoint read them from there. The lines to announce at
    start and the checkpoint read go to ``args.run_context``."""
    from neuromamba.spec import (BACKBONE_KEYS, INPUT_KEYS, SPEC_KEYS, conflicts,
                                 read_checkpoint_settings, resolve, show)

    explicit = _explicit_spec(args)
    path, role = _checkpoint_for_run(args)
    checkpoint = read_checkpoint_settings(path, args.allow_pickle) if path else None
    keys = BACKBONE_KEYS if role == "finetune" else SPEC_KEYS
    first = role == "test" and not args.override_checkpoint_settings
    skip = ("clf_head_version",) if args.pretraining else ()
    resolution = resolve(explicit, checkpoint, keys, recipe, checkpoint_first=first, skip_departures=skip)
    context = args.run_context
    context.checkpoint = checkpoint
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
    recipe_flags = _recipe_flag_departures(args, recipe, flag_defaults)
    if recipe_flags:  # the command's recipe set training flags: it did apply
        resolution.recipe = recipe.name
    departures = resolution.departures + recipe_flags
    args.recipe = resolution.recipe
    args.departures = departures
    args.setting_sources = dict(resolution.sources)
    resolution.departures = departures
    spec = resolution.spec(getattr(args, "data_grid", None))
    if not args.pretraining:
        _check_head(spec)
    args.spec = spec.as_dict()
    context.announce = [resolution.announcement(), *notes, *context.notes]


def _check_auto_head(args) -> None:
    """auto trains every candidate on one frozen backbone pass and chooses on validation."""
    if not args.freeze_feature_extractor or args.prompt_tuning:
        raise ValueError("--clf_head_version auto trains its candidate heads on a frozen backbone: add "
                         "--freeze_feature_extractor with --load_model_path (--recipe tuned does), "
                         "or name one head")
    if not args.split_file and args.val_split <= 0:
        raise ValueError("--clf_head_version auto chooses its head on the validation subjects: "
                         "give --val_split > 0")


def _check_head(spec) -> None:
    """The head can work on the model's tokens (its class's own check: the connectivity head
    needs two parcels and two time tokens of fluctuations), said with the flags that decide."""
    from neuromamba.models.heads import get_head
    from neuromamba.spec import show

    from neuromamba.models.heads import AUTO_HEAD

    name = spec.model.clf_head_version
    if name == AUTO_HEAD:  # each candidate is checked by itself; linear works on any tokens
        return
    try:
        get_head(name).check(spec.head_context(num_outputs=2))
    except ValueError as err:
        raise ValueError(f"--clf_head_version {name} with --img_size {show(spec.input.img_size)} "
                         f"--patch_size {show(spec.model.patch_size)}: {err}; use a larger "
                         f"--img_size or another --clf_head_version") from None


def _recipe_flag_departures(args, recipe, flag_defaults: dict) -> list:
    """A recipe's non-spec flags (learning rate, epochs ...) that the run kept."""
    from neuromamba.spec import SPEC_KEYS, show

    return [f"{key} {show(value)} (default: {show(flag_defaults.get(key))})"
            for key, value in sorted(recipe.values.items())
            if key not in SPEC_KEYS + ("model_size",) and getattr(args, key, None) == value
            and value != flag_defaults.get(key)]


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
    from neuromamba.models.heads import AUTO_HEAD

    heads = _head_names() + [AUTO_HEAD]
    if not args.pretraining and args.clf_head_version not in heads:
        raise ValueError(f"--clf_head_version {args.clf_head_version!r} is not one of {heads}")
    if not args.pretraining and args.clf_head_version == AUTO_HEAD and not args.test_only:
        _check_auto_head(args)  # a test reads the head its checkpoint kept
    if (2 * args.embed_dim) % args.headdim:
        raise ValueError(f"--headdim {args.headdim} must divide 2 x --embed_dim = {2 * args.embed_dim} "
                         "(Mamba2 heads split the expanded width)")
    from neuromamba.spec import check_clip_layout

    check_clip_layout(args.img_size, args.patch_size)
    if args.stride_within_seq < 1:
        raise ValueError(f"--stride_within_seq must be >= 1, got {args.stride_within_seq}")

    if not (math.isfinite(args.stride_between_seq) and args.stride_between_seq > 0):
        raise ValueError(f"--stride_between_seq must be > 0 (clip lengths), got {args.stride_between_seq}")


def run_config_of(args: argparse.Namespace) -> RunConfig:
    """The validated command as the typed run everything below the command line reads."""
    return RunConfig.from_record(args_to_dict(args), args.run_context)


def args_to_dict(args: argparse.Namespace) -> dict:
    """Plain, YAML/`weights_only`-friendly copy of the namespace."""
    out = {}
    for key, value in sorted(vars(args).items()):
        if key.startswith("_") or key in RUNTIME_FIELDS:  # run-time companions, not settings
            continue
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    if "img_size" in out:  # what the stored img_size counts (spec.spec_from_config reads it)
        from neuromamba.spec import IMG_SIZE_MEANING_KEY, RAW_FRAMES

        out[IMG_SIZE_MEANING_KEY] = RAW_FRAMES
    return out


# What a checkpoint is trained for, beyond the spec: resuming with other values cannot work.
TASK_SETTINGS = ("task", "prompt_tuning", "prompt_len", "freeze_feature_extractor", "downstream_task")


def check_test_task(args) -> None:
    """--test_only: the checkpoint's task must be the one the flags score (a regression model
    must never be scored against class labels)."""
    checkpoint = args.run_context.checkpoint
    config = checkpoint.config if checkpoint is not None else None
    if config is None:
        return
    if config.get("task") != args.task:
        raise ValueError(f"--test_ckpt_path {args.test_ckpt_path} is a {config.get('task')} model "
                         f"(of {config.get('downstream_task')!r}); these flags score {args.task} of "
                         f"{args.downstream_task!r}: give the checkpoint's --downstream_task "
                         f"and --downstream_task_type")


def check_resume(args) -> None:
    """--resume_ckpt_path: the checkpoint must come from a run of the same task (its input and
    model settings were already taken from it, or a contradicting flag refused)."""
    from neuromamba.spec import differs, show

    checkpoint = args.run_context.checkpoint
    config = checkpoint.config if checkpoint is not None else None
    if config is None:
        raise ValueError(f"--resume_ckpt_path {args.resume_ckpt_path}: not a checkpoint written by "
                         f"project/main.py (no run settings inside)")
    changed = [f"--{key} {show(config[key])} (now {show(getattr(args, key, None))})"
               for key in TASK_SETTINGS
               if key in config and differs(getattr(args, key, None), config[key])]
    if changed:
        raise ValueError(f"--resume_ckpt_path {args.resume_ckpt_path} was made with "
                         f"{'; '.join(changed)}; resume with the run's own flags (its args.yaml)")
