"""One run from validated flags: run folder, data, module, Trainer; fit then test the best
checkpoint once, or only test a given checkpoint."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_info, rank_zero_only

from neuromamba.console import NeuroMambaWarning
from neuromamba.machine import check_hardware
from neuromamba.run_config import RunConfig
from neuromamba.training.module import NeuroMambaModule
from neuromamba.training.outputs import default_run_name, make_run_dir, write_args_yaml
from neuromamba.training.run_checks import check_checkpoint_grid, checkpoint_split_for_test
from neuromamba.training.trainer import build_trainer, monitor_for


def build_datamodule(run: RunConfig, run_dir: Path):
    """The data as the run's input spec says (grid, clip length, strides, scaling)."""
    from neuromamba.data.datamodule import DataOptions, FMRIDataModule

    task = run.task
    options = DataOptions.from_values(
        run.record, output_dir=str(run_dir),
        downstream_task=None if task.pretraining else task.downstream_task,
        downstream_task_type=task.downstream_task_type or "classification",
        equal_eval_batches=needs_equal_eval_batches(run.hardware.strategy))
    return FMRIDataModule.from_spec(run.spec.input, run.spec.model.patch_size[3], options)


def needs_equal_eval_batches(strategy: str) -> bool:
    """Strategies whose every forward is a collective (ZeRO-3 gathers the parameters)."""
    return strategy.startswith("deepspeed_stage_3")


def build_module(run: RunConfig, datamodule) -> NeuroMambaModule:
    num_classes, mean, std = None, 0.0, 1.0
    if run.task.task == "classification":
        num_classes = datamodule.num_classes
    elif run.task.task == "regression":
        mean, std = datamodule.train_target_stats()
    return NeuroMambaModule.for_run(run, num_classes=num_classes, target_mean=float(mean),
                                    target_std=float(std))


def _resumed_run_name(run: RunConfig):
    """Resuming <output_dir>/<run>/checkpoints/last.ckpt continues in the same run folder."""
    if not run.checkpoints.resume_ckpt_path:
        return None
    ckpt = Path(run.checkpoints.resume_ckpt_path).resolve()
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent == Path(run.output.output_dir).resolve():
        return ckpt.parent.parent.name
    return None


@rank_zero_only
def _write_args(run_dir: Path, run: RunConfig) -> None:
    write_args_yaml(run_dir, dict(run.record))


def _prepare_data(run: RunConfig, run_dir: Path):
    """The data module set up; the run with the data's grid and split recorded (args.yaml
    written), and the data module."""
    checkpoints = run.checkpoints
    if checkpoints.test_only:
        split, note = checkpoint_split_for_test(run)
        if split:
            run = run.with_record(split_file=split)
            rank_zero_info(f"[neuromamba] --test_only uses {note}")
    datamodule = build_datamodule(run, run_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if run.task.pretraining and not checkpoints.test_only:
        datamodule.refuse_leaking_runs()  # before anything is written
    classes = datamodule.class_line()
    if classes:
        rank_zero_info(f"[neuromamba] {classes}")
    # What the run was trained on, kept in its record (and so in every checkpoint): the data's
    # grid, checked against any checkpoint used with it, and the split file --test_only reuses.
    grid = datamodule.grid.as_dict()
    run = run.with_record(data_grid=grid, split_file_used=str(
        Path(datamodule.split_path).resolve()) if datamodule.split_path else None)
    checkpoint = run.context.checkpoint
    if checkpoint is not None and (checkpoints.load_model_path or checkpoints.test_only):
        for note in check_checkpoint_grid(grid, checkpoint):
            warnings.warn(note, NeuroMambaWarning, stacklevel=2)
    _write_args(run_dir, run)
    return run, datamodule


@rank_zero_only
def _remove_run_dir(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def run(run: RunConfig, extra_callbacks=()) -> dict:
    """Train (or only test) the resolved run. Returns the run folder, the test metrics, the
    trainer and the module (``extra_callbacks`` are appended, e.g. by tests)."""
    started = time.time()
    check_hardware(run.hardware)
    pl.seed_everything(run.task.seed, workers=True)
    # The recipe and every departure from the paper, in one line, then what a checkpoint fixed.
    for line in run.context.announce:
        rank_zero_info(f"[neuromamba] {line}")
    output_dir = Path(run.output.output_dir)
    name = run.output.run_name or _resumed_run_name(run) or default_run_name(run)
    finished = _finished_run(output_dir / name, run)
    if finished is not None:  # a resume with nothing left to train: the record stays as it is
        return finished
    if run.context.fresh_start:  # a requeued job starting over in its folder
        _refuse_another_experiment(output_dir / name, run)
    new_folder = not (output_dir / name).exists()
    run_dir = make_run_dir(str(output_dir), name)
    run = run.with_record(run_dir=str(run_dir))
    lock = _lock(run_dir)  # one writer per run folder (rank 0 holds it)
    try:
        return _run_locked(run, run_dir, new_folder, started, extra_callbacks)
    finally:
        if lock is not None:
            lock.release()


@rank_zero_only
def _say(line: str) -> None:
    print(line, flush=True)


def _finished_run(run_dir: Path, run: RunConfig):
    """A finished run (its summary.json written) is a record: a new training or test there is
    refused unless --overwrite_run; a resume with no epoch left says so and returns the run as
    it is, changing nothing. None: go on."""
    import json

    summary_path = run_dir / "summary.json"
    if not summary_path.is_file() or run.output.overwrite_run:
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = {}
    if run.checkpoints.resume_ckpt_path:
        trained = (summary.get("final_epoch") or 0) + 1
        max_epochs = run.trainer.max_epochs
        if max_epochs is not None and 0 < max_epochs <= trained:
            _say(f"[neuromamba] {run_dir} finished its {trained} epoch(s) (summary.json); nothing "
                 f"to resume with --max_epochs {max_epochs}, nothing changed")
            return {"run_dir": str(run_dir), "metrics": summary.get("test_metrics", {}),
                    "trainer": None, "module": None}
        return None  # more epochs asked for: training goes on in its folder
    raise ValueError(f"{run_dir} holds a finished run (summary.json); a new run there would replace "
                     f"its checkpoints, summary and predictions. Choose another --run_name, or pass "
                     f"--overwrite_run to replace it")


# What makes a run the experiment it is (a requeued job repeats its command, so these agree).
_EXPERIMENT_KEYS = ("pretraining", "use_autoregressive", "task", "downstream_task", "dataset_name",
                    "image_path", "label_csv", "target_column", "seed")


def _refuse_another_experiment(run_dir: Path, run: RunConfig) -> None:
    """``--resume_ckpt_path last`` on a folder with no checkpoint starts over in it (the requeue
    case), unless the folder's args.yaml records another experiment: then the name is taken."""
    import yaml

    from neuromamba.spec import differs

    recorded_path = run_dir / "args.yaml"
    if not recorded_path.is_file() or run.output.overwrite_run:
        return
    try:
        recorded = yaml.safe_load(recorded_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # a half-written record of a job killed at its start: nothing to compare
    current = run.record

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


def _steps_per_epoch(run: RunConfig, datamodule) -> int | None:
    """Optimizer steps of one training epoch per process (an upper bound when the device
    count is 'auto'), for the logging interval."""
    import math

    trainer = run.trainer
    clips = len(datamodule.datasets["train"])
    batches = math.ceil(clips / (trainer.batch_size * run.hardware.processes))
    if isinstance(trainer.limit_train_batches, int):
        batches = min(batches, trainer.limit_train_batches)
    elif isinstance(trainer.limit_train_batches, float):
        batches = max(1, int(batches * trainer.limit_train_batches))
    return max(1, batches // max(trainer.gradient_accumulation_steps, 1)) if clips else None


def _lock(run_dir: Path):
    from neuromamba.training.run_lock import RunLock

    if rank_zero_only.rank != 0:
        return None
    lock = RunLock(run_dir).acquire()
    if lock.note:
        rank_zero_info(f"[neuromamba] {lock.note}")
    return lock


def _run_locked(run: RunConfig, run_dir: Path, new_folder: bool, started: float, extra_callbacks) -> dict:
    try:
        run, datamodule = _prepare_data(run, run_dir)
    except (ValueError, OSError):
        # Bad input found before any training: leave no half-made run folder behind.
        if new_folder:
            _remove_run_dir(run_dir)
        raise
    # A checkpoint file carries its own hyper-parameters; a DeepSpeed checkpoint folder is
    # loaded by the DeepSpeed strategy into a module built from the flags.
    checkpoints = run.checkpoints
    from_file = checkpoints.test_only and Path(checkpoints.test_ckpt_path).is_file()
    if from_file:
        # How to evaluate is this command's choice; what the model is, the checkpoint's.
        module = NeuroMambaModule.from_checkpoint(
            checkpoints.test_ckpt_path, eval_background_removal=checkpoints.eval_background_removal)
    else:
        module = build_module(run, datamodule)
        _announce_memory(run, module, datamodule)
    trainer = build_trainer(run, run_dir, extra_callbacks, steps_per_epoch=_steps_per_epoch(run, datamodule))

    if checkpoints.test_only:
        results = trainer.test(module, datamodule=datamodule,
                               ckpt_path=None if from_file else checkpoints.test_ckpt_path)
    else:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoints.resume_ckpt_path)
        # Test once, on the best validation checkpoint (never the last one, never every epoch).
        has_best = bool(trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path)
        results = trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None)
    metrics = dict(results[0]) if results else {}
    _write_summary(run_dir, trainer, datamodule, metrics, started, monitor_for(run)[0], run.spec.as_dict(),
                   module.head_choice)
    _print_summary(run_dir, metrics)
    return {"run_dir": str(run_dir), "metrics": metrics, "trainer": trainer, "module": module}


def _announce_memory(run: RunConfig, module, datamodule) -> None:
    """The step's memory estimate, before the first step (warns or refuses when it cannot fit)."""
    from neuromamba.training.memory_check import check_step_memory

    params = sum(p.numel() for p in module.parameters())
    line = check_step_memory(run.hardware, run.trainer, module.model, params, datamodule.datasets.get("train"))
    rank_zero_info(f"[neuromamba] {line}")


@rank_zero_only
def _write_summary(run_dir, trainer, datamodule, metrics, started, monitor, spec, head_choice) -> None:
    from neuromamba.training.run_summary import write_run_summary

    write_run_summary(run_dir, trainer, datamodule, metrics, started, monitor, spec, head_choice)


@rank_zero_only
def _print_summary(run_dir: Path, metrics: dict) -> None:
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))
    print(f"[neuromamba] run folder: {run_dir}")
    print(f"[neuromamba] test: {shown or 'no metrics'}")
