"""Named model sizes (README "Model variants", paper Appendix B).

Every variant has 12 Mamba2 blocks, ngroups=1, expand=2 and patch 6x6x6x2; they differ in the
embedding width C, the SSM state size and the head dimension (nheads = 2C / headdim = 2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict


@dataclass(frozen=True)
class Variant:
    embed_dim: int
    depth: int
    d_state: int
    headdim: int
    params: float  # the README's parameter count, with the 432-value output layer


VARIANTS: Dict[str, Variant] = {
    "small": Variant(embed_dim=128, depth=12, d_state=32, headdim=128, params=1.4e6),
    "base": Variant(embed_dim=192, depth=12, d_state=48, headdim=192, params=3.1e6),
    "medium": Variant(embed_dim=256, depth=12, d_state=64, headdim=256, params=5.4e6),
    # The README leaves d_state/headdim blank for Large; SPEC §4 gives C/4 and C.
    "large": Variant(embed_dim=384, depth=12, d_state=96, headdim=384, params=11.9e6),
}


def variant_config(name: str) -> dict:
    """``dict(embed_dim, depth, d_state, headdim)`` of a named variant (case-insensitive)."""
    key = str(name).lower()
    if key not in VARIANTS:
        raise ValueError(f"unknown model variant {name!r}; choose one of {list(VARIANTS)}")
    config = asdict(VARIANTS[key])
    config.pop("params")
    return config
