"""One run from validated flags: run folder, data, module, Trainer; fit then test the best
checkpoint once, or only test a given checkpoint."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_info, rank_zero_only

from neuromamba.run_settings import args_to_dict, check_hardware
from neuromamba.console import NeuroMambaWarning
from neuromamba.training.module import NeuroMambaModule
from neuromamba.training.outputs import default_run_name, make_run_dir, write_args_yaml
from neuromamba.training.run_checks import check_checkpoint_grid, use_test_checkpoint_split
from neuromamba.training.trainer import build_trainer, monitor_for


def build_datamodule(args, run_dir: Path):
    """The data as the run's input spec says (grid, clip length, strides, scaling)."""
    from neuromamba.data.datamodule import DataOptions, FMRIDataModule

    options = DataOptions.from_values(
        vars(args), output_dir=str(run_dir),
        downstream_task=None if args.pretraining else args.downstream_task,
        downstream_task_type=args.downstream_task_type or "classification",
        equal_eval_batches=needs_equal_eval_batches(args.strategy))
    return FMRIDataModule.from_spec(args.spec["input"], args.spec["model"]["patch_size"][3], options)


def needs_equal_eval_batches(strategy: str) -> bool:
    """Strategies whose every forward is a collective (ZeRO-3 gathers the parameters)."""
    return strategy.startswith("deepspeed_stage_3")


def build_module(args, datamodule) -> NeuroMambaModule:
    num_classes, mean, std = None, 0.0, 1.0
    if args.task == "classification":
        num_classes = datamodule.num_classes
    elif args.task == "regression":
        mean, std = datamodule.train_target_stats()
    return NeuroMambaModule(args_to_dict(args), num_classes=num_classes, target_mean=float(mean),
                            target_std=float(std))


def _resumed_run_name(args):
    """Resuming <output_dir>/<run>/checkpoints/last.ckpt continues in the same run folder."""
    if not args.resume_ckpt_path:
        return None
    ckpt = Path(args.resume_ckpt_path).resolve()
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent == Path(args.output_dir).resolve():
        return ckpt.parent.parent.name
    return None


@rank_zero_only
def _write_args(run_dir: Path, args) -> None:
    write_args_yaml(run_dir, args_to_dict(args))


def _prepare_data(args, run_dir: Path):
    """The data module set up, the data's grid and split recorded, args.yaml written."""
    if args.test_only:
        for note in use_test_checkpoint_split(args):
            rank_zero_info(f"[neuromamba] --test_only uses {note}")
    datamodule = build_datamodule(args, run_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if args.pretraining and not args.test_only:
        datamodule.refuse_leaking_runs()  # before anything is written
    classes = datamodule.class_line()
    if classes:
        rank_zero_info(f"[neuromamba] {classes}")
    # What the run was trained on, kept in its config (and so in every checkpoint): the data's
    # grid, checked against any checkpoint used with it, and the split file --test_only reuses.
    args.data_grid = datamodule.grid.as_dict()
    args.spec["input"]["data_grid"] = args.data_grid
    args.split_file_used = str(Path(datamodule.split_path).resolve()) if datamodule.split_path else None
    checkpoint = args.run_context.checkpoint
    if checkpoint is not None and (args.load_model_path or args.test_only):
        for note in check_checkpoint_grid(args.data_grid, checkpoint):
            warnings.warn(note, NeuroMambaWarning, stacklevel=2)
    _write_args(run_dir, args)
    return datamodule


@rank_zero_only
def _remove_run_dir(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def run(args, extra_callbacks=()) -> dict:
    """Train (or only test) as the flags say. Returns the run folder, the test metrics, the
    trainer and the module (``extra_callbacks`` are appended, e.g. by tests)."""
    started = time.time()
    check_hardware(args)
    pl.seed_everything(args.seed, workers=True)
    # The recipe and every departure from the paper, in one line, then what a checkpoint fixed.
    for line in args.run_context.announce:
        rank_zero_info(f"[neuromamba] {line}")
    name = args.run_name or _resumed_run_name(args) or default_run_name(args)
    finished = _finished_run(Path(args.output_dir) / name, args)
    if finished is not None:  # a resume with nothing left to train: the record stays as it is
        return finished
    if args.run_context.fresh_start:  # a requeued job starting over in its folder
        _refuse_another_experiment(Path(args.output_dir) / name, args)
    new_folder = not (Path(args.output_dir) / name).exists()
    run_dir = make_run_dir(args.output_dir, name)
    args.run_dir = str(run_dir)
    lock = _lock(run_dir)  # one writer per run folder (rank 0 holds it)
    try:
        return _run_locked(args, run_dir, new_folder, started, extra_callbacks)
    finally:
        if lock is not None:
            lock.release()


@rank_zero_only
def _say(line: str) -> None:
    print(line, flush=True)


def _finished_run(run_dir: Path, args):
    """A finished run (its summary.json written) is a record: a new training or test there is
    refused unless --overwrite_run; a resume with no epoch left says so and returns the run as
    it is, changing nothing. None: go on."""
    import json

    summary_path = run_dir / "summary.json"
    if not summary_path.is_file() or args.overwrite_run:
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = {}
    if args.resume_ckpt_path:
        trained = (summary.get("final_epoch") or 0) + 1
        if args.max_epochs is not None and 0 < args.max_epochs <= trained:
            _say(f"[neuromamba] {run_dir} finished its {trained} epoch(s) (summary.json); nothing "
                 f"to resume with --max_epochs {args.max_epochs}, nothing changed")
            return {"run_dir": str(run_dir), "metrics": summary.get("test_metrics", {}),
                    "trainer": None, "module": None}
        return None  # more epochs asked for: training goes on in its folder
    raise ValueError(f"{run_dir} holds a finished run (summary.json); a new run there would replace "
                     f"its checkpoints, summary and predictions. Choose another --run_name, or pass "
                     f"--overwrite_run to replace it")


# What makes a run the experiment it is (a requeued job repeats its command, so these agree).
_EXPERIMENT_KEYS = ("pretraining", "use_autoregressive", "task", "downstream_task", "dataset_name",
                    "image_path", "label_csv", "target_column", "seed")


def _refuse_another_experiment(run_dir: Path, args) -> None:
    """``--resume_ckpt_path last`` on a folder with no checkpoint starts over in it (the requeue
    case), unless the folder's args.yaml records another experiment: then the name is taken."""
    import yaml

    from neuromamba.spec import differs

    recorded_path = run_dir / "args.yaml"
    if not recorded_path.is_file() or args.overwrite_run:
        return
    try:
        recorded = yaml.safe_load(recorded_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # a half-written record of a job killed at its start: nothing to compare
    current = args_to_dict(args)

    def settings(config: dict) -> dict:
        spec = config.get("spec") or {}
        found = {k: config.get(k) for k in _EXPERIMENT_KEYS}
        found.update({f"model.{k}": v for k, v in (spec.get("model") or {}).items()})
        found.update({f"input.{k}": v for k, v in (spec.get("input") or {}).items() if k != "data_grid"})
        return found

    before, now = settings(recorded), settings(current)
    differ = [f"{k} {before[k]} (this command: {now.get(k)})" for k in sorted(before)
              if k in now and before[k] is not None and differs(before[k], now[k])]
    if differ:
        raise ValueError(f"--resume_ckpt_path last: {run_dir} holds no checkpoint yet but was started "
                         f"as another experiment ({'; '.join(differ[:4])}); choose another --run_name, "
                         f"or pass --overwrite_run to start this one there")


def _steps_per_epoch(args, datamodule) -> int | None:
    """Optimizer steps of one training epoch per process (an upper bound when the device
    count is 'auto'), for the logging interval."""
    import math

    clips = len(datamodule.datasets["train"])
    processes = args.num_nodes * (args.devices if isinstance(args.devices, int) and args.devices > 0
                                  else len(args.devices) if isinstance(args.devices, list) else 1)
    batches = math.ceil(clips / (args.batch_size * processes))
    if isinstance(args.limit_train_batches, int):
        batches = min(batches, args.limit_train_batches)
    elif isinstance(args.limit_train_batches, float):
        batches = max(1, int(batches * args.limit_train_batches))
    return max(1, batches // max(args.gradient_accumulation_steps, 1)) if clips else None


def _lock(run_dir: Path):
    from neuromamba.training.run_lock import RunLock

    if rank_zero_only.rank != 0:
        return None
    lock = RunLock(run_dir).acquire()
    if lock.note:
        rank_zero_info(f"[neuromamba] {lock.note}")
    return lock


def _run_locked(args, run_dir: Path, new_folder: bool, started: float, extra_callbacks) -> dict:
    try:
        datamodule = _prepare_data(args, run_dir)
    except (ValueError, OSError):
        # Bad input found before any training: leave no half-made run folder behind.
        if new_folder:
            _remove_run_dir(run_dir)
        raise
    # A checkpoint file carries its own hyper-parameters; a DeepSpeed checkpoint folder is
    # loaded by the DeepSpeed strategy into a module built from the flags.
    from_file = args.test_only and Path(args.test_ckpt_path).is_file()
    if from_file:
        # How to evaluate is this command's choice; what the model is, the checkpoint's.
        module = NeuroMambaModule.from_checkpoint(
            args.test_ckpt_path, eval_background_removal=args.eval_background_removal)
    else:
        module = build_module(args, datamodule)
        _announce_memory(args, module, datamodule)
    trainer = build_trainer(args, run_dir, args.task, extra_callbacks,
                            steps_per_epoch=_steps_per_epoch(args, datamodule))

    if args.test_only:
        results = trainer.test(module, datamodule=datamodule,
                               ckpt_path=None if from_file else args.test_ckpt_path)
    else:
        trainer.fit(module, datamodule=datamodule, ckpt_path=args.resume_ckpt_path)
        # Test once, on the best validation checkpoint (never the last one, never every epoch).
        has_best = bool(trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path)
        results = trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None)
    metrics = dict(results[0]) if results else {}
    _write_summary(run_dir, trainer, datamodule, metrics, started, monitor_for(args, args.task)[0],
                   args.spec)
    _print_summary(run_dir, metrics)
    return {"run_dir": str(run_dir), "metrics": metrics, "trainer": trainer, "module": module}


def _announce_memory(args, module, datamodule) -> None:
    """The step's memory estimate, before the first step (warns or refuses when it cannot fit)."""
    from neuromamba.training.memory_check import check_step_memory

    params = sum(p.numel() for p in module.parameters())
    rank_zero_info(f"[neuromamba] {check_step_memory(args, module.model, params, datamodule.datasets.get('train'))}")


@rank_zero_only
def _write_summary(run_dir, trainer, datamodule, metrics, started, monitor, spec) -> None:
    from neuromamba.training.run_summary import write_run_summary

    write_run_summary(run_dir, trainer, datamodule, metrics, started, monitor, spec)


@rank_zero_only
def _print_summary(run_dir: Path, metrics: dict) -> None:
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    print(f"[neuromamba] run folder: {run_dir}")
    print(f"[neuromamba] test: {shown or 'no metrics'}")
