"""The FLOPs table of ``project/check_flops.py``: cost settings and the original's claim.

The paper reports 6.96e17 -> 3.72e17 FLOPs per epoch (46.5% fewer) for the 5.4M (Medium)
model when background tokens are removed. Every FLOP term of FMamba is linear in the number
of kept tokens (the SSD scan too, up to chunk padding), so the reduction is, to within 0.1%,
the fraction of tokens removed; it depends only on the brain masks, which we compute from
nilearn's MNI152 mask (or the user's data) and report next to the claim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .brain_masks import (
    batch_shared_token_mask,
    jittered_batch,
    kept_tokens,
    mni152_voxel_mask,
    token_mask_from_voxels,
)
from ..models.flops import CostSummary, FMambaFlopsConfig, count_parameters, group_terms, summarize

ORIGINAL_CLAIM = {"all_tokens": 6.96e17, "brain_tokens": 3.72e17, "model": "medium (5.4M)"}
ORIGINAL_REDUCTION = 1.0 - ORIGINAL_CLAIM["brain_tokens"] / ORIGINAL_CLAIM["all_tokens"]


@dataclass(frozen=True)
class MaskBatch:
    """Per-sample voxel masks of one or more batches (the batch-shared rule ORs within each
    batch) and where they came from."""

    label: str
    voxel_masks: List[np.ndarray]  # the first batch
    more_batches: Tuple[List[np.ndarray], ...] = ()
    clips_per_epoch: Optional[int] = None  # known when the masks come from a dataset

    @property
    def batches(self) -> List[List[np.ndarray]]:
        return [self.voxel_masks, *self.more_batches]


def token_lengths(
    cfg: FMambaFlopsConfig, voxel_masks: Sequence[np.ndarray], rule: str
) -> List[int]:
    """Kept tokens per sample under ``rule``: "batch" (the original: OR over the batch, same
    length for all) or "packed" (each sample its own mask)."""
    time_tokens = cfg.grid[3]
    token_masks = [token_mask_from_voxels(m, cfg.patch_size) for m in voxel_masks]
    if rule == "batch":
        shared = batch_shared_token_mask(token_masks)
        return [kept_tokens(shared, time_tokens)] * len(token_masks)
    if rule == "packed":
        return [kept_tokens(m, time_tokens) for m in token_masks]
    raise ValueError(f"unknown background-removal rule {rule!r}; use 'batch' or 'packed'")


def mni152_batch(
    cfg: FMambaFlopsConfig, batch_size: int, dilation_voxels: int = 0, jitter_voxels: int = 0,
    seed: int = 0, voxel_size_mm: float = 2.0,
) -> MaskBatch:
    mask = mni152_voxel_mask(cfg.img_size[:3], dilation_voxels, voxel_size_mm)
    label = f"nilearn MNI152 brain mask on the {'x'.join(map(str, cfg.img_size[:3]))} grid at {voxel_size_mm:g} mm"
    if dilation_voxels:
        label += f" +{dilation_voxels}vox"
    if jitter_voxels and batch_size > 1:
        label += f" jitter±{jitter_voxels}"
    return MaskBatch(label, jittered_batch(mask, batch_size, jitter_voxels, seed))


def cost_settings(
    cfg: FMambaFlopsConfig, masks: Optional[MaskBatch], rules: Sequence[str] = ("batch", "packed")
) -> List[CostSummary]:
    """All tokens, then one row per background-removal rule for the given masks."""
    batch = len(masks.voxel_masks) if masks else 1
    settings = [summarize(cfg, "all tokens", [cfg.num_tokens] * batch)]
    if masks is not None:
        for rule in rules:
            if rule == "packed" and max(len(b) for b in masks.batches) == 1:
                continue  # identical to the batch rule
            lengths = [n for b in masks.batches for n in token_lengths(cfg, b, rule)]
            settings.append(summarize(cfg, f"{masks.label}, {rule}", lengths))
    return settings


def table_rows(
    cfg: FMambaFlopsConfig, settings: Sequence[CostSummary], clips_per_epoch: Optional[int]
) -> List[Dict]:
    base = settings[0]
    params = count_parameters(cfg)
    rows = []
    for s in settings:
        groups = group_terms(s.terms)
        row = {
            "setting": s.label,
            "tokens/clip": int(round(s.tokens_per_clip)),
            "kept %": round(100.0 * s.tokens_per_clip / cfg.num_tokens, 1),
            "params": params,
            "fwd GEMM/clip": float(groups["gemm"]),
            "fwd scan/clip": float(groups["scan"]),
            "fwd total/clip": float(s.forward_per_clip),
            "train/clip": float(s.train_per_clip),
            "FLOPs saved %": round(100.0 * (1 - s.forward_per_clip / base.forward_per_clip), 1),
        }
        if clips_per_epoch:
            row["train/epoch"] = float(s.per_epoch(clips_per_epoch))
        rows.append(row)
    return rows


def dilation_sweep(cfg: FMambaFlopsConfig, max_voxels: int = 8) -> List[Dict]:
    """Kept-token fraction of the MNI152 mask as it is loosened by ``k`` voxels: shows how much
    looser than the template mask the original's data must have been to give its ratio."""
    rows = []
    for k in range(max_voxels + 1):
        mask = mni152_voxel_mask(cfg.img_size[:3], k)
        token_mask = token_mask_from_voxels(mask, cfg.patch_size)
        kept = float(token_mask.mean())
        rows.append({
            "dilation (vox)": k,
            "dilation (mm @2mm)": 2 * k,
            "brain voxels %": round(100.0 * float(mask.mean()), 1),
            "kept tokens %": round(100.0 * kept, 1),
            "FLOPs saved %": round(100.0 * (1.0 - kept), 1),
        })
    return rows


def jitter_sweep(
    cfg: FMambaFlopsConfig, batch_sizes: Sequence[int], jitters: Sequence[int], seed: int = 0
) -> List[Dict]:
    """Kept-token fraction under the batch-shared rule when the batch holds brains placed
    differently by up to ``jitter`` voxels (the OR grows the kept set)."""
    mask = mni152_voxel_mask(cfg.img_size[:3])
    rows = []
    for b in batch_sizes:
        for j in jitters:
            masks = jittered_batch(mask, b, j, seed)
            shared = batch_shared_token_mask(token_mask_from_voxels(m, cfg.patch_size) for m in masks)
            kept = float(shared.mean())
            rows.append({
                "batch": b, "jitter (vox)": j, "kept tokens %": round(100.0 * kept, 1),
                "FLOPs saved %": round(100.0 * (1.0 - kept), 1),
            })
    return rows


def implied_clips_per_epoch(all_token_summary: CostSummary) -> Dict[str, float]:
    """How many clips per epoch the original's 6.96e17 corresponds to under each counting
    convention (training 3x forward; forward only; forward GEMMs only, as a profiler that
    misses the fused scan would count)."""
    fwd = all_token_summary.forward_per_clip
    gemm = group_terms(all_token_summary.terms)["gemm"]
    claim = ORIGINAL_CLAIM["all_tokens"]
    return {
        "training (3x fwd)": claim / (3 * fwd),
        "forward only": claim / fwd,
        "forward GEMMs only": claim / gemm,
    }
