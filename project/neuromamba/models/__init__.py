"""Models: the FMamba backbone, its heads, named variants and the Mamba2 layer.

``FMamba(embed_dim=..., depth=..., d_state=..., headdim=..., img_size=..., patch_size=...)`` or
``FMamba.from_variant("base")``; ``build_head("attention" | "connectivity" | "linear" | "mamba", embed_dim, num_outputs, **options)``.
"""
from .embedding import patchify, unpatchify
from .fmamba import BackboneOutput, FMamba
from .heads import HEADS, build_head
from .mamba2 import Mamba2, RMSNorm
from .variants import VARIANTS, variant_config

__all__ = [
    "BackboneOutput",
    "FMamba",
    "HEADS",
    "Mamba2",
    "RMSNorm",
    "VARIANTS",
    "build_head",
    "patchify",
    "unpatchify",
    "variant_config",
]
