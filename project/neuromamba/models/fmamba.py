"""The NeuroMamba backbone (SPEC §1-4): tokens -> Mamba2 blocks -> normed token features.

Parameter names follow the released checkpoints (SPEC §5): ``embedder.projection``,
``embedder.pos``, ``mamba_layers.{i}.0`` (block RMSNorm), ``mamba_layers.{i}.1`` (Mamba2),
``norm``, ``output_layer``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .embedding import (BACKGROUND_REMOVALS, BACKGROUND_VALUES, Embedder, brain_tokens_from_voxels,
                        patchify, select_tokens)
from .mamba2 import Mamba2, RMSNorm
from ..paper import CHUNK_SIZE, PAPER_DEFAULTS
from .variants import variant_config


@dataclass
class BackboneOutput:
    """What the backbone hands to a loss or a head.

    ``features`` (B', L, C): final-RMSNorm-ed features of the kept tokens;
    ``tokens`` (B', L, P): their raw patch values (the autoregressive targets);
    ``seq_idx`` (B', L) int32 in packed mode (B' = 1, samples concatenated), else None;
    ``lengths`` (B,): kept tokens per sample;
    ``keep_index`` (B', L) int64: grid index of each kept token (for mapping back to voxels);
    ``num_tokens_total``: tokens per sample before background removal.
    """

    features: torch.Tensor
    tokens: torch.Tensor
    seq_idx: Optional[torch.Tensor]
    lengths: torch.Tensor
    keep_index: torch.Tensor
    num_tokens_total: int

    @property
    def batch_size(self) -> int:
        return self.lengths.numel()

    def to_grid(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Scatter per-kept-token ``values`` (B', L, ...) back to the full token grid
        ``(B, num_tokens_total, ...)``, dropped tokens set to ``fill``. With values of 432 patch
        values, :func:`~neuromamba.models.embedding.unpatchify` then gives a voxel map."""
        if tuple(values.shape[:2]) != tuple(self.keep_index.shape):
            raise ValueError(f"values must start with the kept-token shape {tuple(self.keep_index.shape)}, "
                             f"got {tuple(values.shape)}")
        grid = values.new_full((self.batch_size, self.num_tokens_total, *values.shape[2:]), fill)
        if self.seq_idx is None:
            rows = torch.arange(self.batch_size, device=values.device).unsqueeze(1).expand_as(self.keep_index)
        else:
            rows = self.seq_idx.long()
        return grid.index_put((rows.flatten(), self.keep_index.flatten()), values.flatten(0, 1))


def mamba_block(
    dim: int, d_state: int, headdim: int, chunk_size: int = CHUNK_SIZE, drop_rate: float = 0.0, layer_idx=None
) -> nn.Sequential:
    """A pre-norm residual block's layers; the Sequential only fixes the parameter names
    (``0`` = RMSNorm, ``1`` = Mamba2); run it with :func:`run_block`."""
    if (2 * dim) % headdim:
        raise ValueError(f"headdim {headdim} must divide 2*embed_dim = {2 * dim} (nheads = 2*embed_dim/headdim)")
    return nn.Sequential(
        RMSNorm(dim, eps=1e-5),
        Mamba2(dim, d_state=d_state, d_conv=4, expand=2, headdim=headdim, ngroups=1,
               chunk_size=chunk_size, layer_idx=layer_idx),
        nn.Dropout(drop_rate),
    )


def run_block(block: nn.Sequential, x: torch.Tensor, seq_idx: Optional[torch.Tensor]) -> torch.Tensor:
    """``x + Dropout(Mamba2(RMSNorm(x)))``, passing ``seq_idx`` to the Mamba2 layer."""
    norm, mixer, dropout = block
    return x + dropout(mixer(norm(x), seq_idx=seq_idx))


class FMamba(nn.Module):
    """NeuroMamba backbone. ``model(x)`` with x ``(B, 1, D, H, W, T)`` -> :class:`BackboneOutput`."""

    def __init__(
        self,
        embed_dim: int = 192,
        depth: int = 12,
        d_state: int = 48,
        headdim: int = 192,
        img_size: Sequence[int] = tuple(PAPER_DEFAULTS["img_size"]),
        patch_size: Sequence[int] = tuple(PAPER_DEFAULTS["patch_size"]),
        background_removal: str = "none",
        background_value: str = "min",
        pos_embedding: str = "nerf",
        pos_seed: int = 0,
        drop_rate: float = 0.0,
        pretraining: bool = True,
        chunk_size: int = CHUNK_SIZE,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if background_removal not in BACKGROUND_REMOVALS:
            raise ValueError(
                f"unknown background_removal {background_removal!r}; choose one of {list(BACKGROUND_REMOVALS)}"
            )
        if background_value not in BACKGROUND_VALUES:
            raise ValueError(f"unknown background_value {background_value!r}; choose one of {list(BACKGROUND_VALUES)}")
        if depth < 1 or embed_dim < 1:
            raise ValueError(f"embed_dim and depth must be positive, got embed_dim={embed_dim}, depth={depth}")
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        self.img_size = tuple(int(v) for v in img_size)
        self.patch_size = tuple(int(v) for v in patch_size)
        self.background_removal = background_removal
        self.background_value = background_value
        self.grad_checkpointing = bool(grad_checkpointing)

        self.embedder = Embedder(embed_dim, self.img_size, self.patch_size, pos_embedding, pos_seed)
        self.mamba_layers = nn.ModuleList(
            mamba_block(embed_dim, d_state, headdim, chunk_size, drop_rate, layer_idx=i) for i in range(depth)
        )
        self.norm = RMSNorm(embed_dim, eps=1e-5)
        patch_dim = self.embedder.patch_dim
        self.output_layer = nn.Linear(embed_dim, patch_dim, bias=True) if pretraining else None

    @classmethod
    def from_variant(cls, name: str, **overrides) -> "FMamba":
        """Build a named size ("small", "base", "medium", "large"); keyword overrides win."""
        return cls(**{**variant_config(name), **overrides})

    @classmethod
    def from_spec(cls, model, background_value: str = "min", **numerics) -> "FMamba":
        """Build from a model spec (``neuromamba.spec.ModelSpec``: what the weights are) and the
        input's background value; ``numerics`` are the run's knobs that leave the weights'
        meaning alone (``drop_rate``, ``pretraining``, ``chunk_size``, ``grad_checkpointing``)."""
        return cls(embed_dim=model.embed_dim, depth=model.depth, d_state=model.d_state,
                   headdim=model.headdim, img_size=model.img_size, patch_size=model.patch_size,
                   background_removal=model.background_removal, background_value=background_value,
                   pos_embedding=model.pos_embedding, **numerics)

    @property
    def grid(self):
        return self.embedder.grid

    @property
    def num_tokens(self) -> int:
        return self.embedder.num_tokens

    def drop_output_layer(self) -> None:
        """Remove the pretraining output layer (fine-tuning feeds the features to a head)."""
        self.output_layer = None

    def forward(self, x: torch.Tensor, prompt: Optional[torch.Tensor] = None,
                brain_mask: Optional[torch.Tensor] = None,
                background_removal: Optional[str] = None) -> BackboneOutput:
        """Run the backbone. ``prompt`` (K, C), if given, is prepended to every sample's kept
        tokens (prompt tuning); the returned features/tokens exclude the prompt positions.
        ``brain_mask`` (B, D, H, W), the data's stored brain mask, decides which tokens are
        background (else their values do); ``background_removal`` overrides the model's rule
        for this call (evaluation uses per-sample ``packed`` masks)."""
        expected = (1, *self.img_size)
        if x.dim() != 6 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        removal = background_removal or self.background_removal
        token_mask = None
        if brain_mask is not None and BACKGROUND_REMOVALS.get(removal, (False,))[0]:
            token_mask = brain_tokens_from_voxels(brain_mask.to(x.device), self.img_size, self.patch_size)
        selection = select_tokens(patchify(x, self.patch_size), removal, self.background_value, token_mask)
        h = self.embedder(selection.tokens, selection.positions)
        seq_idx = selection.seq_idx

        token_slots = None
        if prompt is not None:
            h, seq_idx, token_slots = _prepend_prompt(h, seq_idx, selection.lengths, prompt)

        for block in self.mamba_layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = checkpoint(run_block, block, h, seq_idx, use_reentrant=False)
            else:
                h = run_block(block, h, seq_idx)
        h = self.norm(h)

        if token_slots is not None:
            h = h[:, token_slots]
        return BackboneOutput(
            features=h,
            tokens=selection.tokens,
            seq_idx=selection.seq_idx,
            lengths=selection.lengths,
            keep_index=selection.positions,
            num_tokens_total=self.num_tokens,
        )

    def next_token_loss(self, out: BackboneOutput) -> torch.Tensor:
        """MSE between ``output_layer(features[i])`` and ``tokens[i + 1]`` within each sample,
        averaged over the predicted tokens and their values (computed in fp32)."""
        if self.output_layer is None:
            raise RuntimeError("this FMamba has no output layer (pretraining=False or dropped); "
                               "next_token_loss needs a model built with pretraining=True")
        pred = self.output_layer(out.features[:, :-1]).float()
        target = out.tokens[:, 1:].float()
        per_token = (pred - target).pow(2).mean(dim=-1)
        if out.seq_idx is None:
            if per_token.numel() == 0:
                raise ValueError("next_token_loss needs at least 2 kept tokens per sample")
            return per_token.mean()
        same_sample = out.seq_idx[:, :-1] == out.seq_idx[:, 1:]  # never predict across samples
        count = same_sample.sum()
        if count == 0:
            raise ValueError("next_token_loss needs at least one sample with 2 or more kept tokens")
        return (per_token * same_sample).sum() / count

    def next_token_loss_per_sample(self, out: BackboneOutput) -> torch.Tensor:
        """``(B,)``: each sample's own next-token MSE, averaged over its predicted tokens (NaN
        for a sample with fewer than 2 kept tokens). Evaluation averages these per clip, so the
        figure does not depend on which clips shared a batch."""
        if self.output_layer is None:
            raise RuntimeError("next_token_loss_per_sample needs a model built with pretraining=True")
        pred = self.output_layer(out.features[:, :-1]).float()
        per_token = (pred - out.tokens[:, 1:].float()).pow(2).mean(dim=-1)
        if out.seq_idx is None:
            if per_token.shape[1] == 0:
                return torch.full((per_token.shape[0],), float("nan"), device=per_token.device)
            return per_token.mean(dim=1)
        sample = out.seq_idx[0, :-1].long()
        valid = (out.seq_idx[0, :-1] == out.seq_idx[0, 1:]).float()
        sums = torch.zeros(out.batch_size, device=per_token.device).index_add_(0, sample, per_token[0] * valid)
        counts = torch.zeros(out.batch_size, device=per_token.device).index_add_(0, sample, valid)
        return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def _prepend_prompt(h: torch.Tensor, seq_idx: Optional[torch.Tensor], lengths: torch.Tensor, prompt: torch.Tensor):
    """Insert the K prompt vectors before each sample. Returns the new hidden states, their
    seq_idx and the positions (in the new layout) of the original tokens."""
    if prompt.dim() != 2 or prompt.shape[1] != h.shape[-1]:
        raise ValueError(f"prompt must have shape (K, {h.shape[-1]}), got {tuple(prompt.shape)}")
    prompt = prompt.to(h.dtype)
    k = prompt.shape[0]
    if seq_idx is None:
        b, length = h.shape[:2]
        h = torch.cat([prompt.unsqueeze(0).expand(b, k, -1), h], dim=1)
        return h, None, torch.arange(k, k + length, device=h.device)

    # Packed: sample s occupies [start_s, start_s + len_s) and moves to start_s + k*(s+1).
    num_samples = lengths.numel()
    sample = seq_idx[0].long()
    token_slots = torch.arange(sample.numel(), device=h.device) + k * (sample + 1)
    new_starts = torch.cumsum(lengths + k, 0) - (lengths + k)
    prompt_slots = (new_starts.unsqueeze(1) + torch.arange(k, device=h.device)).flatten()
    total = sample.numel() + k * num_samples
    out = h.new_zeros(1, total, h.shape[-1])
    out = out.index_put((torch.zeros_like(token_slots), token_slots), h[0])
    out = out.index_put(
        (torch.zeros_like(prompt_slots), prompt_slots), prompt.repeat(num_samples, 1)
    )
    new_seq_idx = torch.repeat_interleave(
        torch.arange(num_samples, device=h.device, dtype=torch.int32), lengths + k
    ).unsqueeze(0)
    return out, new_seq_idx, token_slots
