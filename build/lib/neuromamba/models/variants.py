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


DEFAULT_VARIANT = "base"


def resolve_dims(model_size: str | None = None, embed_dim: int | None = None,
                 depth: int | None = None, d_state: int | None = None,
                 headdim: int | None = None) -> dict:
    """The backbone's (embed_dim, depth, d_state, headdim) from what the user gave; every entry
    script uses this one rule:

    * ``model_size`` names the variant whose values fill what is not given;
    * without it, ``embed_dim`` alone selects the variant of that width (128 small, 192 base,
      256 medium, 384 large), as the original's ``--embed_dim 128 --depth 12`` commands expect;
    * any other width gets the variants' own rule: depth 12, d_state = C/4, headdim = C;
    * nothing given: the base variant. Values given explicitly always win.
    """
    given = {"embed_dim": embed_dim, "depth": depth, "d_state": d_state, "headdim": headdim}
    if model_size is not None:
        base = variant_config(model_size)
    elif embed_dim is not None:
        by_width = [name for name, v in VARIANTS.items() if v.embed_dim == int(embed_dim)]
        base = variant_config(by_width[0]) if by_width else {
            "embed_dim": int(embed_dim), "depth": 12, "d_state": max(int(embed_dim) // 4, 1),
            "headdim": int(embed_dim)}
    else:
        base = variant_config(DEFAULT_VARIANT)
    return {key: int(base[key]) if value is None else int(value) for key, value in given.items()}
