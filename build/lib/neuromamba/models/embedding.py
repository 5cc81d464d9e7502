"""Turning a 4D fMRI clip into tokens: patchify, positional encodings, background mask.

Token order (SPEC §1): row-major over the patch grid ``(d, h, w, t)`` with ``t`` changing
fastest; inside a token the values are ordered ``(sd, sh, sw, st)``. ``unpatchify`` is the exact
inverse, so per-token maps (attributions, errors) can be put back into voxel space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

Size4 = Tuple[int, int, int, int]

NERF_NUM_FREQUENCIES = 10  # frequencies 2**0 .. 2**9, SPEC §2
FF_SCALE = 4.0  # std of the random Fourier frequencies, in cycles per unit of coordinate


def _as_size4(value: Sequence[int], name: str) -> Size4:
    values = tuple(int(v) for v in value)
    if len(values) != 4 or any(v <= 0 for v in values):
        raise ValueError(f"{name} must be 4 positive integers (D, H, W, T), got {tuple(value)}")
    return values  # type: ignore[return-value]


def grid_size(img_size: Sequence[int], patch_size: Sequence[int]) -> Size4:
    """Number of patches along each axis; every axis must divide evenly."""
    img = _as_size4(img_size, "img_size")
    patch = _as_size4(patch_size, "patch_size")
    bad = [f"{axis}: {i} % {p} = {i % p}" for axis, i, p in zip("DHWT", img, patch) if i % p]
    if bad:
        raise ValueError(
            f"img_size {img} is not divisible by patch_size {patch} ({'; '.join(bad)}); "
            "choose an img_size that is a multiple of the patch size on every axis"
        )
    return tuple(i // p for i, p in zip(img, patch))  # type: ignore[return-value]


def patchify(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """``(B, 1, D, H, W, T)`` -> ``(B, N, sd*sh*sw*st)`` in the token order above."""
    if x.dim() != 6 or x.shape[1] != 1:
        raise ValueError(f"expected a clip of shape (B, 1, D, H, W, T), got {tuple(x.shape)}")
    gd, gh, gw, gt = grid_size(x.shape[2:], patch_size)
    sd, sh, sw, st = _as_size4(patch_size, "patch_size")
    b = x.shape[0]
    x = x.reshape(b, gd, sd, gh, sh, gw, sw, gt, st)
    # (b, gd, gh, gw, gt, sd, sh, sw, st): grid axes row-major (t fastest), then in-patch axes.
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6, 8)
    return x.reshape(b, gd * gh * gw * gt, sd * sh * sw * st)


def unpatchify(tokens: torch.Tensor, img_size: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """Exact inverse of :func:`patchify`: ``(B, N, P)`` -> ``(B, 1, D, H, W, T)``."""
    gd, gh, gw, gt = grid_size(img_size, patch_size)
    sd, sh, sw, st = _as_size4(patch_size, "patch_size")
    n, p = gd * gh * gw * gt, sd * sh * sw * st
    if tokens.dim() != 3 or tokens.shape[1] != n or tokens.shape[2] != p:
        raise ValueError(
            f"expected tokens of shape (B, {n}, {p}) for img_size {tuple(img_size)} and "
            f"patch_size {tuple(patch_size)}, got {tuple(tokens.shape)}"
        )
    b = tokens.shape[0]
    x = tokens.reshape(b, gd, gh, gw, gt, sd, sh, sw, st)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
    return x.reshape(b, 1, gd * sd, gh * sh, gw * sw, gt * st)


def grid_coordinates(grid: Sequence[int]) -> torch.Tensor:
    """``(N, 4)`` continuous coordinates in [0, 1], one row per token, in token order."""
    axes = [torch.linspace(0.0, 1.0, steps=int(g), dtype=torch.float64) for g in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, 4)


# ----------------------------------------------------------------------------------------------
# Positional encodings: each builder maps (grid, embed_dim, generator) -> (N, embed_dim) float64.
# The result becomes the persistent buffer `embedder.pos`; random ones are drawn once from a
# seeded generator and must be loaded from checkpoints, never recomputed (SPEC §2).
# ----------------------------------------------------------------------------------------------


def nerf_features(coords: torch.Tensor, num_frequencies: int = NERF_NUM_FREQUENCIES) -> torch.Tensor:
    """``(N, 4)`` -> ``(N, 4 + 8*num_frequencies)``: [coords, sin f0, cos f0, sin f1, ...]."""
    blocks = [coords]
    for k in range(num_frequencies):
        freq = 2.0**k  # no pi, as in the original
        blocks.append(torch.sin(coords * freq))
        blocks.append(torch.cos(coords * freq))
    return torch.cat(blocks, dim=-1)


def nerf_encoding(grid: Sequence[int], embed_dim: int, generator: torch.Generator) -> torch.Tensor:
    features = nerf_features(grid_coordinates(grid))
    projection = torch.randn(features.shape[1], embed_dim, generator=generator, dtype=torch.float64)
    return features @ projection


def fourier_feature_encoding(grid: Sequence[int], embed_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Random Fourier features (Tancik et al. 2020): [sin(2*pi*vB), cos(2*pi*vB)], B ~ N(0, s^2)."""
    half = (embed_dim + 1) // 2
    frequencies = torch.randn(4, half, generator=generator, dtype=torch.float64) * FF_SCALE
    angles = 2.0 * math.pi * grid_coordinates(grid) @ frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)[:, :embed_dim]


def sincos_encoding(grid: Sequence[int], embed_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Fixed transformer-style sine-cosine encoding of the integer grid index, per axis.

    Each axis gets ``2 * (embed_dim // 8)`` channels; leftover channels stay zero.
    """
    per_axis = embed_dim // 8
    if per_axis == 0:
        raise ValueError(f"pos_embedding 'cpe' needs embed_dim >= 8, got {embed_dim}")
    mesh = torch.meshgrid(*[torch.arange(int(g), dtype=torch.float64) for g in grid], indexing="ij")
    index = torch.stack(mesh, dim=-1).reshape(-1, 4)
    omega = 1.0 / (10000.0 ** (torch.arange(per_axis, dtype=torch.float64) / per_axis))
    parts = []
    for axis in range(4):
        angles = index[:, axis : axis + 1] * omega
        parts += [torch.sin(angles), torch.cos(angles)]
    enc = torch.cat(parts, dim=-1)
    return torch.nn.functional.pad(enc, (0, embed_dim - enc.shape[1]))


def no_encoding(grid: Sequence[int], embed_dim: int, generator: torch.Generator) -> torch.Tensor:
    n = int(math.prod(int(g) for g in grid))
    return torch.zeros(n, embed_dim, dtype=torch.float64)


POS_EMBEDDINGS: Dict[str, Callable[[Sequence[int], int, torch.Generator], torch.Tensor]] = {
    "nerf": nerf_encoding,
    "ff": fourier_feature_encoding,
    "cpe": sincos_encoding,
    "none": no_encoding,
}


def build_pos_encoding(name: str, grid: Sequence[int], embed_dim: int, seed: int = 0) -> torch.Tensor:
    """``(1, N, embed_dim)`` float32 positional encoding, reproducible from ``seed``."""
    if name not in POS_EMBEDDINGS:
        raise ValueError(f"unknown pos_embedding {name!r}; choose one of {sorted(POS_EMBEDDINGS)}")
    generator = torch.Generator().manual_seed(int(seed))
    return POS_EMBEDDINGS[name](grid, embed_dim, generator).to(torch.float32).unsqueeze(0)


class Embedder(nn.Module):
    """Patch projection (``projection``, no bias) plus the fixed positional buffer ``pos``."""

    def __init__(
        self,
        embed_dim: int,
        img_size: Sequence[int],
        patch_size: Sequence[int],
        pos_embedding: str = "nerf",
        pos_seed: int = 0,
    ):
        super().__init__()
        self.grid = grid_size(img_size, patch_size)
        self.patch_dim = int(math.prod(_as_size4(patch_size, "patch_size")))
        self.projection = nn.Parameter(torch.randn(self.patch_dim, embed_dim))
        self.register_buffer("pos", build_pos_encoding(pos_embedding, self.grid, embed_dim, pos_seed))

    @property
    def num_tokens(self) -> int:
        return self.pos.shape[1]

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``tokens (B', L, P)`` and their grid indices ``positions (B', L)`` -> ``(B', L, C)``."""
        return tokens @ self.projection + self.pos[0][positions]


# ----------------------------------------------------------------------------------------------
# Background-token removal (SPEC §3)
# ----------------------------------------------------------------------------------------------

def _background_min(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.amin(dim=(1, 2), keepdim=True)  # per sample, over all voxels


def _background_zero(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.new_zeros(())


# The background value of a sample: its minimum (znorm/minmax_minback scalings) or 0 (*_zeroback).
BACKGROUND_VALUES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "min": _background_min,
    "zero": _background_zero,
}


def brain_token_mask(tokens: torch.Tensor, background_value: str = "min") -> torch.Tensor:
    """``(B, N, P)`` -> bool ``(B, N)``: a token is brain if ANY value differs from the background."""
    if background_value not in BACKGROUND_VALUES:
        raise ValueError(f"unknown background_value {background_value!r}; choose one of {list(BACKGROUND_VALUES)}")
    tokens = tokens.detach()
    return (tokens != BACKGROUND_VALUES[background_value](tokens)).any(dim=-1)


def brain_tokens_from_voxels(voxel_mask: torch.Tensor, img_size: Sequence[int],
                             patch_size: Sequence[int]) -> torch.Tensor:
    """Token mask from a voxel brain mask: ``(B, D, H, W)`` -> bool ``(B, N)`` in token order.

    A token is brain when its 6x6x6 patch holds at least one brain voxel (at every time
    position: the mask is spatial). This is the rule wherever a brain mask is stored with the
    data; it does not depend on the values, so signed or demeaned data select correctly.
    """
    gd, gh, gw, gt = grid_size(img_size, patch_size)
    sd, sh, sw, _ = _as_size4(patch_size, "patch_size")
    b = voxel_mask.shape[0]
    if tuple(voxel_mask.shape[1:]) != (gd * sd, gh * sh, gw * sw):
        raise ValueError(f"brain mask of shape {tuple(voxel_mask.shape[1:])} does not match the "
                         f"image grid {(gd * sd, gh * sh, gw * sw)}")
    patches = voxel_mask.reshape(b, gd, sd, gh, sh, gw, sw).to(torch.bool)
    spatial = patches.any(dim=6).any(dim=4).any(dim=2)  # (B, gd, gh, gw)
    return spatial.unsqueeze(-1).expand(b, gd, gh, gw, gt).reshape(b, gd * gh * gw * gt)


@dataclass
class TokenSelection:
    """Which tokens enter the backbone, laid out as ``(B', L)`` rows.

    ``positions`` holds each kept token's index in the full grid (so it keeps its true positional
    encoding); ``seq_idx`` marks the sample of each position in packed mode (else None);
    ``lengths`` counts kept tokens per sample.
    """

    tokens: torch.Tensor  # (B', L, P)
    positions: torch.Tensor  # (B', L) int64
    seq_idx: Optional[torch.Tensor]  # (B', L) int32 or None
    lengths: torch.Tensor  # (B,) int64


def _keep_all(tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> TokenSelection:
    b, n, _ = tokens.shape
    positions = torch.arange(n, device=tokens.device).expand(b, n)
    return TokenSelection(tokens, positions, None, torch.full((b,), n, dtype=torch.long, device=tokens.device))


def _keep_batch_shared(tokens: torch.Tensor, mask: torch.Tensor) -> TokenSelection:
    """The original rule: OR the masks over the batch, so the batch stays rectangular."""
    b = tokens.shape[0]
    keep = mask.any(dim=0).nonzero().flatten()
    lengths = torch.full((b,), keep.numel(), dtype=torch.long, device=tokens.device)
    return TokenSelection(tokens[:, keep], keep.expand(b, keep.numel()), None, lengths)


def _keep_packed(tokens: torch.Tensor, mask: torch.Tensor) -> TokenSelection:
    """Per-sample masks; samples concatenated into one row, told apart by ``seq_idx`` (the
    Mamba2 layers reset their state at each boundary)."""
    sample, position = mask.nonzero(as_tuple=True)  # row-major: samples in order, tokens in order
    seq_idx = sample.to(torch.int32).unsqueeze(0)
    return TokenSelection(tokens[sample, position].unsqueeze(0), position.unsqueeze(0), seq_idx, mask.sum(dim=1))


# background_removal mode -> (needs a brain mask, selection rule)
BACKGROUND_REMOVALS: Dict[str, Tuple[bool, Callable[..., TokenSelection]]] = {
    "none": (False, _keep_all),
    "batch": (True, _keep_batch_shared),
    "packed": (True, _keep_packed),
}


# Rules evaluation may use: per-sample (the default) or, behind a flag, the original batch-wide one.
EVAL_BACKGROUND_REMOVALS = ("packed", "batch")


def select_tokens(
    tokens: torch.Tensor, removal: str = "none", background_value: str = "min",
    token_mask: Optional[torch.Tensor] = None,
) -> TokenSelection:
    """Choose the tokens of ``(B, N, P)`` patches that enter the backbone (see BACKGROUND_REMOVALS).

    ``token_mask`` (B, N), from the data's stored brain mask, decides which tokens are brain;
    without it the value rule :func:`brain_token_mask` does (data without a mask)."""
    if removal not in BACKGROUND_REMOVALS:
        raise ValueError(f"unknown background_removal {removal!r}; choose one of {list(BACKGROUND_REMOVALS)}")
    needs_mask, rule = BACKGROUND_REMOVALS[removal]
    mask = None
    if needs_mask:
        mask = token_mask.to(torch.bool) if token_mask is not None else brain_token_mask(tokens, background_value)
        empty = (mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            source = "the brain mask is empty" if token_mask is not None else (
                f"every voxel equals the background value ({background_value!r})")
            raise ValueError(
                f"sample(s) {empty} of the batch have no brain tokens: {source}; check the input "
                f"scaling and the data"
            )
    return rule(tokens, mask)
