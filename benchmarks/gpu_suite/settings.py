"""The shapes and step counts of a full GPU run and of the CPU ``--dry-run``.

The full settings are the paper's: 96^3 x 20 clips, patch 6x6x6x2, the Base/Medium variants,
batch 1-4 for throughput and the micro-batch 3 for memory. The dry-run keeps every section and
every case but shrinks the shapes so the whole pipeline runs on CPU in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Tuple


@dataclass(frozen=True)
class LayerConfig:
    """One Mamba2 layer configuration (an FMamba variant's mixer: expand 2, ngroups 1)."""

    name: str
    d_model: int
    d_state: int
    headdim: int


@dataclass(frozen=True)
class ModelDims:
    embed_dim: int
    depth: int
    d_state: int
    headdim: int

    def as_kwargs(self) -> Dict[str, int]:
        return {"embed_dim": self.embed_dim, "depth": self.depth, "d_state": self.d_state,
                "headdim": self.headdim}


def variant_dims(name: str) -> ModelDims:
    from neuromamba.models.variants import variant_config

    return ModelDims(**variant_config(name))


@dataclass(frozen=True)
class SuiteSettings:
    label: str
    img_size: Tuple[int, int, int, int] = (96, 96, 96, 20)
    patch_size: Tuple[int, int, int, int] = (6, 6, 6, 2)
    chunk_size: int = 256
    # (1) parity
    parity_layers: Tuple[LayerConfig, ...] = (LayerConfig("base", 192, 48, 192),
                                              LayerConfig("medium", 256, 64, 256))
    parity_batch: int = 2
    parity_seqlen: int = 2000  # not a multiple of the chunk: exercises the padded last chunk
    parity_packed_lengths: Tuple[int, ...] = (700, 1055, 245)  # one row, three sequences
    parity_chunk_size: int = 256
    # (2) throughput, (3) memory, (5) MFU: models by variant name -> dims
    models: Dict[str, ModelDims] = field(default_factory=dict)
    throughput_model: str = "base"
    throughput_batches: Tuple[int, ...] = (3,)  # the paper's micro-batch (--batches for more)
    removals: Tuple[str, ...] = ("none", "batch", "packed")
    mask_jitter_voxels: int = 2  # per-sample shift of the brain mask (anatomical variation)
    warmup_steps: int = 3
    timed_steps: int = 10
    memory_models: Tuple[str, ...] = ("base", "medium")
    memory_batch: int = 3
    memory_removals: Tuple[str, ...] = ("none", "batch")
    memory_budget_gib: float = 24.0
    mfu_model: str = "base"
    mfu_batch: int = 3
    mfu_removals: Tuple[str, ...] = ("none", "batch")
    # (4) pretraining + fine-tuning through project/main.py
    train_model: str = "base"
    train_steps: int = 50
    finetune_steps: int = 20
    train_batch: int = 3
    train_batches_per_epoch: int = 10  # short epochs: a validation loss on fixed clips after each
    train_learning_rate: float = 1e-4
    train_strategy: str = "deepspeed_stage_1"
    train_precision: str = "bf16"
    train_accelerator: str = "gpu"
    dummy_num_subjects: int = 20
    subprocess_timeout_s: int = 1500

    def model(self, name: str) -> ModelDims:
        if name not in self.models:
            raise ValueError(f"no model dims for {name!r} in the {self.label} settings; "
                             f"known: {sorted(self.models)}")
        return self.models[name]


def full_settings() -> SuiteSettings:
    return SuiteSettings(label="full", models={n: variant_dims(n) for n in ("base", "medium")})


def dry_run_settings() -> SuiteSettings:
    """Tiny shapes for CPU: 24^3 x 4 clips (128 tokens), 2 blocks, short parity sequences."""
    return SuiteSettings(
        label="dry-run",
        img_size=(24, 24, 24, 4),
        parity_batch=2,
        parity_seqlen=100,
        parity_packed_lengths=(41, 37, 22),
        parity_chunk_size=32,
        models={"base": ModelDims(32, 2, 8, 32), "medium": ModelDims(48, 2, 12, 48)},
        throughput_batches=(1, 2),
        mask_jitter_voxels=1,
        warmup_steps=1,
        timed_steps=2,
        memory_batch=3,
        mfu_batch=2,
        train_steps=9,
        finetune_steps=3,
        train_batch=2,
        train_batches_per_epoch=3,
        train_learning_rate=3e-3,
        train_strategy="auto",
        train_accelerator="cpu",
        dummy_num_subjects=6,
        subprocess_timeout_s=600,
    )


def with_overrides(settings: SuiteSettings, **changes) -> SuiteSettings:
    """A copy with the given fields replaced (None values are ignored)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
