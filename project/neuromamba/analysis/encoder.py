"""Load any checkpoint as an encoder: the FMamba backbone, its head if it has one, and the
settings needed to feed it (img_size, patch_size, input scaling, target statistics).

Two kinds of files:

* this project's Lightning ``.ckpt`` (``hyper_parameters`` + ``state_dict``): rebuilt exactly
  with :meth:`NeuroMambaModule.from_checkpoint` (head, prompt, target mean/std included);
* any backbone-only format :func:`neuromamba.checkpoints.read_checkpoint` reads (released
  ``*.pt``, DeepSpeed folders, bare state_dicts): the architecture is inferred from the tensor
  shapes, ``img_size``/``patch_size`` come from the caller and must give the checkpoint's
  number of tokens.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

@dataclass
class Encoder:
    """A loaded checkpoint, ready for inference (eval mode)."""

    model: nn.Module  # FMamba
    head: Optional[nn.Module]
    prompt: Optional[torch.Tensor]
    img_size: tuple  # the model's clip (a static token included)
    patch_size: tuple
    input_scaling_method: str
    task: str  # "backbone" (no head), "pretraining", "classification", "regression"
    num_classes: Optional[int] = None
    target_mean: float = 0.0
    target_std: float = 1.0
    source: str = ""
    format: str = ""
    data_grid: Optional[dict] = None  # the training data's grid (shape, voxel_size, affine)
    target_name: str = ""  # what the head predicts (the run's --target_column/--downstream_task)

    @property
    def clip_size(self) -> tuple:
        """The raw frames a clip reads (the ``--img_size`` the model was trained with)."""
        from neuromamba.spec import raw_img_size

        return raw_img_size(self.img_size, self.patch_size, self.input_scaling_method)

    @property
    def voxel_size(self) -> Optional[float]:
        """The training data's (isotropic) voxel size in mm, when the checkpoint records it."""
        size = (self.data_grid or {}).get("voxel_size") or []
        return float(size[0]) if size else None

    def check_grid(self, grid: dict, what: str) -> None:
        """Refuse data on another grid than the checkpoint was trained on."""
        from neuromamba.training.run_checks import grid_mismatch

        differs = grid_mismatch(grid, self.data_grid or {})
        if differs:
            raise ValueError(f"{what} is on another grid than {self.source} was trained on "
                             f"({differs}); preprocess it like the checkpoint's data")

    def backbone(self, x: torch.Tensor, brain_mask: Optional[torch.Tensor] = None):
        """The backbone output for clips ``x (B, 1, D, H, W, T)`` (prompt included if any);
        ``brain_mask`` (B, D, H, W), the data's stored mask, selects the brain tokens."""
        if brain_mask is not None:
            brain_mask = brain_mask.to(x.device)
        return self.model(x, prompt=self.prompt, brain_mask=brain_mask)

    def predict(self, x: torch.Tensor, brain_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-clip predictions: class probabilities ``(B, K)`` or regression values in
        original units ``(B, 1)`` (un-standardised with the stored train statistics)."""
        if self.head is None:
            raise ValueError(f"{self.source}: the checkpoint has no task head (task "
                             f"{self.task!r}); predictions need a fine-tuned checkpoint")
        out = self.head(self.backbone(x, brain_mask)).float()
        if self.task == "classification":
            return torch.softmax(out, dim=-1)
        return out * self.target_std + self.target_mean

    def to(self, device) -> "Encoder":
        self.model.to(device)
        if self.head is not None:
            self.head.to(device)
        if self.prompt is not None:
            self.prompt = self.prompt.to(device)
        return self

    def use_per_sample_tokens(self) -> None:
        """Embeddings must not depend on which other clips share a batch; the original's
        batch-wide background mask does, so switch it to per-sample (packed) masks, which
        keep exactly the tokens a batch of one would keep."""
        if getattr(self.model, "background_removal", "none") == "batch":
            self.model.background_removal = "packed"


def load_encoder(
    path: str,
    img_size: Optional[Sequence[int]] = None,
    patch_size: Optional[Sequence[int]] = None,
    input_scaling_method: Optional[str] = None,
    allow_pickle: bool = False,
    need_head: bool = False,
) -> Encoder:
    """Load ``path`` (see the module docstring) in eval mode on the CPU.

    The input it expects is resolved like every run's (:mod:`neuromamba.spec`): the given
    values, then what the checkpoint stores (the paper's spec for a released file), then the
    paper's defaults. A fine-tuned checkpoint's model is its own: ``img_size``/``patch_size``
    only matter for backbone-only files. ``need_head`` (predict, attribute) refuses a
    checkpoint without a classification/regression head, before any weights are built."""
    from neuromamba.checkpoints import checkpoint_path, require_torch_archive
    from neuromamba.spec import BACKBONE_KEYS, read_checkpoint_settings, resolve

    path = Path(checkpoint_path(os.fspath(path), "--checkpoint"))  # a run folder: its best.ckpt
    _refuse_foreign_folder(path)
    require_torch_archive(path, "--checkpoint")
    settings = read_checkpoint_settings(str(path), allow_pickle)
    # A DeepSpeed folder written by main.py holds the run's settings like a .ckpt does.
    from_run = settings.format == "project" or (settings.format == "deepspeed"
                                                  and settings.config is not None)
    task = (settings.config or {}).get("task") if from_run else None
    if need_head and task not in ("classification", "regression"):
        raise ValueError(f"--checkpoint {path}: no task head ({task or 'backbone-only file'}); this "
                         "needs a fine-tuned classification/regression checkpoint of project/main.py")
    explicit = {"img_size": img_size, "patch_size": patch_size,
                "input_scaling_method": input_scaling_method}
    stored = settings.values.get("input_scaling_method") if settings.config is not None else None
    if input_scaling_method and stored and input_scaling_method != stored:
        import warnings

        from neuromamba.console import NeuroMambaWarning

        warnings.warn(f"--input_scaling_method {input_scaling_method}: {path} was trained on "
                      f"{stored}; the model reads an input it never learnt (and another clip "
                      f"layout when one of them has a static token). Leave the flag out to use "
                      f"the checkpoint's", NeuroMambaWarning, stacklevel=2)
    if from_run:
        explicit.update(img_size=None, patch_size=None)  # the weights fix them
    resolved = resolve(explicit, settings, BACKBONE_KEYS).values
    if from_run:
        return _from_lightning(path, settings.config, resolved["input_scaling_method"], allow_pickle)
    return _from_backbone_checkpoint(path, resolved, settings, allow_pickle)


def _from_lightning(path: Path, config: dict, scaling: str, allow_pickle: bool = False) -> Encoder:
    from neuromamba.spec import spec_from_config
    from neuromamba.training.module import NeuroMambaModule

    module = NeuroMambaModule.from_checkpoint(str(path), allow_pickle=allow_pickle).eval()
    spec = spec_from_config(config)
    mean, std = module.target_stats()
    prompt = module.prompt.detach() if getattr(module, "prompt", None) is not None else None
    num_classes = module.hparams.get("num_classes")
    return Encoder(
        model=module.model, head=module.head, prompt=prompt,
        img_size=spec.model.img_size, patch_size=spec.model.patch_size,
        input_scaling_method=scaling, task=config.get("task", "pretraining"),
        num_classes=num_classes, target_mean=mean, target_std=std,
        source=str(path), format="lightning", data_grid=config.get("data_grid"),
        target_name=str(config.get("target_column") or config.get("downstream_task") or ""),
    )


def _from_backbone_checkpoint(path, resolved: dict, settings, allow_pickle) -> Encoder:
    from neuromamba.checkpoints import infer_backbone_config, load_pretrained, read_checkpoint
    from neuromamba.models import FMamba
    from neuromamba.paper import PAPER_DEFAULTS
    from neuromamba.spec import show, spec_from_values

    contents = read_checkpoint(path, allow_pickle=allow_pickle)
    cfg = infer_backbone_config(contents.backbone)
    missing = [k for k in ("embed_dim", "depth", "d_state", "headdim") if k not in cfg]
    if missing or not cfg.get("depth"):
        raise ValueError(f"{path}: cannot infer the backbone architecture ({', '.join(missing)} missing)")

    # the backbone's spec: its dims read off the tensors, the rest resolved (flag > file > paper);
    # inference masks each clip on its own (packed)
    spec = spec_from_values({**PAPER_DEFAULTS, **resolved, "background_removal": "packed",
                             **{k: cfg[k] for k in ("embed_dim", "depth", "d_state", "headdim")}})
    patch_size, scaling = spec.model.patch_size, resolved["input_scaling_method"]
    img_size = spec.model.img_size
    model = FMamba.from_spec(spec.model, background_value=spec.background_value,
                             pretraining=cfg.get("has_output_layer", False))
    if "num_tokens" in cfg and cfg["num_tokens"] != model.num_tokens:
        raise ValueError(
            f"{path}: the checkpoint's positional encoding has {cfg['num_tokens']} tokens but "
            f"--img_size {show(spec.input.img_size)} with --patch_size {show(patch_size)} gives "
            f"{model.num_tokens}; "
            "pass the img_size/patch_size the backbone was trained with")
    load_pretrained(model, path, allow_pickle=allow_pickle)
    model.eval()
    return Encoder(model=model, head=None, prompt=None, img_size=img_size, patch_size=patch_size,
                   input_scaling_method=scaling, task="backbone", source=str(path),
                   format=contents.format, data_grid=(settings.config or {}).get("data_grid"))


def _refuse_foreign_folder(p: Path) -> None:
    """A folder given as a checkpoint must be a DeepSpeed checkpoint (run folders were already
    turned into their checkpoint file)."""
    if p.is_dir() and not any(p.iterdir()):
        raise ValueError(f"--checkpoint {p}: an empty folder, not a checkpoint")
    if p.is_dir() and not (p / "latest").is_file() and not any(p.glob("*/*model_states.pt")):
        raise ValueError(f"--checkpoint {p}: a folder that is neither a run folder nor a DeepSpeed "
                         f"checkpoint; it holds {sorted(q.name for q in p.iterdir())[:8]}")
