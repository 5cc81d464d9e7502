"""What the timing and memory sections run: brain-shaped clips and one FMamba training step.

The clips follow the real data's layout after ``znorm_minback`` scaling: brain voxels carry
values, every background voxel holds the clip minimum, so the token mask of SPEC §3 keeps the
tokens touching nilearn's MNI152 brain mask (the same mask models/flops.py counts with).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .settings import ModelDims


@functools.lru_cache(maxsize=4)
def _brain_mask(size: tuple) -> np.ndarray:
    from neuromamba.analysis.brain_masks import mni152_voxel_mask

    mask = mni152_voxel_mask((96, 96, 96))
    if size != mask.shape:
        from scipy.ndimage import zoom

        factors = [t / s for t, s in zip(size, mask.shape)]
        mask = zoom(mask.astype(np.uint8), factors, order=0).astype(bool)[: size[0], : size[1], : size[2]]
    mask.setflags(write=False)  # cached and shared: never modified in place
    return mask


def brain_voxel_masks(spatial_size: Sequence[int], batch: int, jitter_voxels: int, seed: int = 0):
    """``batch`` boolean ``(D, H, W)`` masks: the MNI152 2 mm brain mask centred in a 96^3 box,
    resampled (nearest) to ``spatial_size`` when that differs, each sample shifted by up to
    ``jitter_voxels`` (the first unshifted)."""
    from neuromamba.analysis.brain_masks import jittered_batch

    return jittered_batch(_brain_mask(tuple(int(s) for s in spatial_size)), batch, jitter_voxels, seed)


def brain_clips(img_size: Sequence[int], batch: int, jitter_voxels: int, seed: int,
                device: torch.device) -> torch.Tensor:
    """``(batch, 1, D, H, W, T)`` float32 clips: N(0,1) fMRI-like values inside the brain,
    the clip minimum (minus a margin) everywhere else."""
    masks = brain_voxel_masks(img_size[:3], batch, jitter_voxels, seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, *img_size), generator=generator)
    brain = torch.from_numpy(np.stack(masks)).view(batch, 1, *img_size[:3], 1)
    background = x.amin(dim=(1, 2, 3, 4, 5), keepdim=True) - 0.5
    x = torch.where(brain, x, background)
    return x.to(device)


def build_model(dims: ModelDims, img_size, patch_size, removal: str, chunk_size: int,
                device: torch.device, seed: int = 0):
    from neuromamba.models.fmamba import FMamba

    torch.manual_seed(seed)
    model = FMamba(**dims.as_kwargs(), img_size=tuple(img_size), patch_size=tuple(patch_size),
                   background_removal=removal, background_value="min", pretraining=True,
                   chunk_size=chunk_size)
    return model.to(device)


@dataclass
class StepResult:
    loss: float
    kept_tokens: int  # tokens that went through the blocks (all samples)
    lengths: list  # kept tokens per sample


class TrainingStep:
    """Forward + next-token loss + backward (+ an AdamW step when ``optimizer_step``), under a
    precision context (fp32 params, bf16 autocast for 'bf16')."""

    def __init__(self, model, clips: torch.Tensor, precision_ctx, optimizer_step: bool):
        self.model = model
        self.clips = clips
        self.precision_ctx = precision_ctx  # callable returning a fresh context manager
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if optimizer_step else None
        self.last: Optional[StepResult] = None

    def __call__(self) -> StepResult:
        with self.precision_ctx():
            out = self.model(self.clips)
            loss = self.model.next_token_loss(out)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        else:
            for p in self.model.parameters():
                p.grad = None
        lengths = [int(v) for v in out.lengths.tolist()]
        self.last = StepResult(float(loss.detach()), sum(lengths), lengths)
        return self.last
