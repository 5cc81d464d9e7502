"""One resolved run as typed, frozen objects: what ``training/`` reads instead of flags.

``neuromamba.run_settings`` validates the command line and resolves the spec once; it hands
over a :class:`RunConfig`, built from the run's flat record (the dict written to args.yaml and
stored in every checkpoint) by :meth:`RunConfig.from_record`. Below that, code reads typed
fields: the spec (:class:`neuromamba.spec.RunSpec`), the task, the hardware, the trainer's
options, the checkpoints and where the run is written. The fields have no defaults of their
own: a command's record holds every flag, whose default lives in one place (the flag's
declaration in :mod:`neuromamba.cli`); a record without one is refused in one line. Stored
records read back through :func:`neuromamba.spec.spec_from_config` and the module's options.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional

from neuromamba.spec import RunSpec, spec_from_config


@dataclass
class RunContext:
    """What resolving a command found beside its settings: the lines to announce at start, the
    checkpoint read once, and whether a requeued job starts its run over. Not a setting: it is
    never written to args.yaml, summary.json or a checkpoint."""

    announce: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # found while validating, announced after the spec
    checkpoint: Optional[object] = None  # spec.CheckpointSettings of the checkpoint that fixes the run
    fresh_start: bool = False  # --resume_ckpt_path last found no checkpoint: the run starts over


def _pick(cls, record: Mapping):
    """``cls`` from the fields of ``record`` (a command's full record: the defaults live in one
    place, the flag declarations of :mod:`neuromamba.cli`)."""
    try:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})
    except KeyError as missing:
        raise ValueError(f"a run record without {missing} (not one written by project/main.py)") from None


@dataclass(frozen=True)
class TaskOptions:
    """What the run learns."""

    task: str  # pretraining | classification | regression
    pretraining: bool
    downstream_task: Optional[str]
    downstream_task_type: Optional[str]
    target_column: Optional[str]
    dataset_name: Any  # one cohort name, or a list of them
    seed: int

    @property
    def description(self) -> str:
        """'pretraining', or 'classification of sex'."""
        if self.pretraining:
            return "pretraining"
        return f"{self.downstream_task_type or 'classification'} of {self.target_column or self.downstream_task}"


@dataclass(frozen=True)
class Hardware:
    """Where and how the processes compute."""

    accelerator: str
    devices: Any  # 'auto', a count, or a list of device ids
    num_nodes: int
    strategy: str
    precision: str  # as the flag says it
    lightning_precision: str  # what the Trainer gets
    autocast_dtype: Optional[str]  # set where the module applies bf16 autocast itself
    ignore_memory_estimate: bool

    @property
    def uses_deepspeed(self) -> bool:
        return self.strategy.startswith("deepspeed")

    @property
    def runs_on_cpu(self) -> bool:
        """The processes compute on the CPU (asked for, or ``auto`` without a GPU)."""
        import torch

        return self.accelerator == "cpu" or (self.accelerator == "auto" and not torch.cuda.is_available())

    @property
    def wants_gpu(self) -> bool:
        return self.accelerator in ("gpu", "cuda")

    @property
    def processes(self) -> int:
        """Training processes in all (1 per node for an 'auto' device count: a lower bound)."""
        per_node = (self.devices if isinstance(self.devices, int) and self.devices > 0
                    else len(self.devices) if isinstance(self.devices, (list, tuple)) else 1)
        return self.num_nodes * per_node

    @property
    def processes_sharing_memory(self) -> int:
        """Training processes on one machine's memory: CPU DDP ranks share the host's."""
        if self.runs_on_cpu and isinstance(self.devices, int) and self.devices > 1:
            return int(self.devices)
        return 1


@dataclass(frozen=True)
class TrainerOptions:
    """The Trainer's loop, logging and batches."""

    batch_size: int
    max_epochs: int
    max_steps: int
    gradient_accumulation_steps: int
    clip_grad_norm: Optional[float]
    check_val_every_n_epoch: int
    log_every_n_steps: int
    num_sanity_val_steps: int
    deterministic: bool
    limit_train_batches: Any  # Lightning's meaning: an int counts batches, a float is a fraction
    limit_val_batches: Any
    limit_test_batches: Any
    monitor: Optional[str]
    monitor_mode: Optional[str]
    no_progress_bar: bool
    loggername: str
    wandb_config: Optional[str]
    project_name: str

    @property
    def limits(self) -> dict:
        return {name: getattr(self, name) for name in
                ("limit_train_batches", "limit_val_batches", "limit_test_batches")
                if getattr(self, name) is not None}


@dataclass(frozen=True)
class CheckpointOptions:
    """The checkpoints the run starts from, resumes or tests, and how a test reads them."""

    load_model_path: Optional[str]
    resume_ckpt_path: Optional[str]
    test_ckpt_path: Optional[str]
    test_only: bool
    override_checkpoint_settings: bool
    eval_background_removal: Optional[str]
    allow_pickle: bool


@dataclass(frozen=True)
class OutputOptions:
    """Where the run folder is."""

    output_dir: str
    run_name: Optional[str]
    overwrite_run: bool


@dataclass(frozen=True)
class RunConfig:
    """The run, resolved. ``record`` is the flat dict at the edges (args.yaml, the module's
    hyper-parameter in every checkpoint); everything else is read from it once, typed."""

    record: Mapping[str, Any]
    spec: RunSpec
    task: TaskOptions
    hardware: Hardware
    trainer: TrainerOptions
    checkpoints: CheckpointOptions
    output: OutputOptions
    context: RunContext = field(default_factory=RunContext, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], context: Optional[RunContext] = None) -> "RunConfig":
        record = dict(record)
        spec = spec_from_config(record)
        record["spec"] = spec.as_dict()  # the record's copy of the spec is the spec's own
        return cls(record=record, spec=spec, task=_pick(TaskOptions, record),
                   hardware=_pick(Hardware, record), trainer=_pick(TrainerOptions, record),
                   checkpoints=_pick(CheckpointOptions, record), output=_pick(OutputOptions, record),
                   context=context or RunContext())

    def with_record(self, **changes) -> "RunConfig":
        """The same run with record values added or changed (what the data showed: its grid,
        the split file used), every typed view rebuilt from the new record."""
        return RunConfig.from_record({**self.record, **changes}, self.context)

    @property
    def split_file(self) -> Optional[str]:
        return self.record.get("split_file")
