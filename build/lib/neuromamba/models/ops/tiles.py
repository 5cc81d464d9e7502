"""Shared helpers of the fast CPU ops: tiles along time (so several elementwise passes stay in
the cache instead of streaming whole (L, channels) tensors), shifts and dtypes."""
import torch

# Tokens per tile: 1,024 tokens x 480 channels (Base) is ~2 MB per tensor, which fits the cache
# (benchmarks/README_mamba2.md).
CONV_TILE_TOKENS = 1024


def at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types, fp64 stays fp64 (tests run the op in double)."""
    return torch.promote_types(dtype, torch.float32)


def shift_right(t: torch.Tensor, shift: int) -> torch.Tensor:
    """out[:, i] = t[:, i - shift] (zeros for i < shift), time on dim 1."""
    if shift == 0:
        return t
    out = torch.zeros_like(t)
    if shift >= t.shape[1]:
        return out
    out[:, shift:] = t[:, : t.shape[1] - shift]
    return out


def tiles(seqlen: int):
    """(start, stop) of each tile of CONV_TILE_TOKENS tokens."""
    return ((start, min(seqlen, start + CONV_TILE_TOKENS)) for start in range(0, seqlen, CONV_TILE_TOKENS))


def chunk_tiles(nchunks: int, chunk_size: int):
    """Slices of whole chunks covering about CONV_TILE_TOKENS tokens each."""
    step = max(1, CONV_TILE_TOKENS // chunk_size)
    return (slice(c, min(nchunks, c + step)) for c in range(0, nchunks, step))


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over all leading dims of a * b, per channel (last dim)."""
    return torch.linalg.vecdot(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), dim=0)


def at_least_fp32_of(x: torch.Tensor) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 tensors, fp64 for fp64 (the tests run in double)."""
    return at_least_fp32(x.dtype)
