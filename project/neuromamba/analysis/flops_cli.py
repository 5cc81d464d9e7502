"""The work behind ``project/check_flops.py``: flags -> config, masks -> table text."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..fileio import atomic_write_text
from ..models.flops import FMambaFlopsConfig, count_parameters
from .flops_report import (
    ORIGINAL_CLAIM,
    ORIGINAL_REDUCTION,
    MaskBatch,
    cost_settings,
    dilation_sweep,
    implied_clips_per_epoch,
    jitter_sweep,
    mni152_batch,
    table_rows,
)
from .tables import format_table

MAIN_COLUMNS = ["setting", "tokens/clip", "kept %", "params", "fwd GEMM/clip", "fwd scan/clip",
                "fwd total/clip", "train/clip", "train/epoch", "FLOPs saved %"]


@dataclass
class FlopsReport:
    text: str
    rows: List[Dict]


def model_dims(args) -> Dict[str, int]:
    """embed_dim, depth, d_state, headdim by main.py's rule (models.variants.resolve_dims)."""
    from neuromamba.models.variants import resolve_dims

    for flag in ("embed_dim", "depth", "d_state", "headdim", "chunk_size", "batch_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be positive, got {value}")
    dims = resolve_dims(args.model_size, args.embed_dim, args.depth, args.d_state, args.headdim)
    if (2 * dims["embed_dim"]) % dims["headdim"]:
        raise ValueError(f"--headdim {dims['headdim']} must divide 2 x --embed_dim = {2 * dims['embed_dim']}")
    return dims


def resolve_settings(args) -> str:
    """Resolve the head and input like a training run would (:mod:`neuromamba.spec`: flag >
    recipe > paper), write them into ``args`` and return the one-line announcement."""
    from neuromamba.spec import load_recipe, resolve

    keys = ("patch_size", "img_size", "clf_head_version", "input_scaling_method")
    explicit = {k: getattr(args, k, None) for k in keys}
    resolution = resolve(explicit, recipe=load_recipe(getattr(args, "recipe", None)), keys=keys,
                         skip_departures=() if args.downstream_task else ("clf_head_version",))
    for key, value in resolution.values.items():
        setattr(args, key, value)
    return resolution.announcement()


def build_config(args) -> FMambaFlopsConfig:
    dims = model_dims(args)
    from neuromamba.spec import check_clip_layout, model_img_size

    check_clip_layout(args.img_size, args.patch_size)
    # the model's clip: --img_size's raw frames, plus a static token if the input has one
    img_size = model_img_size(args.img_size, args.patch_size, args.input_scaling_method)
    return FMambaFlopsConfig(
        embed_dim=dims["embed_dim"], depth=dims["depth"], d_state=dims["d_state"],
        headdim=dims["headdim"], img_size=img_size, patch_size=tuple(args.patch_size),
        chunk_size=args.chunk_size, pretraining=args.downstream_task is None,
        head=None if args.downstream_task is None else args.clf_head_version,
        num_outputs=args.num_classes,
    )


def clips_per_epoch(args) -> Optional[int]:
    if args.num_clips_per_epoch is not None:
        if args.num_clips_per_epoch <= 0:
            raise ValueError("--num_clips_per_epoch must be positive")
        return args.num_clips_per_epoch
    if args.dataset_size is not None:
        if args.dataset_size <= 0 or args.clips_per_subject <= 0:
            raise ValueError("--dataset_size and --clips_per_subject must be positive")
        return args.dataset_size * args.clips_per_subject
    return None


def _mni152_masks(args, cfg) -> MaskBatch:
    return mni152_batch(cfg, args.batch_size, args.mask_dilation_voxels, args.jitter_voxels,
                        voxel_size_mm=args.voxel_size)


def _file_masks(args, cfg) -> MaskBatch:
    from .brain_masks import mask_from_nifti

    if not args.mask_file:
        raise ValueError("--mask file needs --mask_file PATH")
    mask = mask_from_nifti(args.mask_file, cfg.img_size[:3])
    return MaskBatch(f"mask {Path(args.mask_file).name}", [mask] * args.batch_size)


def _hdf5_masks(args, cfg) -> MaskBatch:
    from .data_masks import mask_from_hdf5

    if not args.hdf5_file:
        raise ValueError("--mask hdf5 needs --hdf5_file PATH")
    mask = mask_from_hdf5(args.hdf5_file, cfg.img_size[:3])
    return MaskBatch(f"mask of {Path(args.hdf5_file).name}", [mask] * args.batch_size)


def _data_masks(args, cfg) -> MaskBatch:
    from .data_masks import masks_from_datamodule

    return masks_from_datamodule(args, cfg)


# --mask: where the brain masks come from.
MASK_SOURCES = {"mni152": _mni152_masks, "file": _file_masks, "hdf5": _hdf5_masks,
                "data": _data_masks, "none": lambda args, cfg: None}


def mask_batch(args, cfg: FMambaFlopsConfig) -> Optional[MaskBatch]:
    """Masks from --mask; --mask_file / --hdf5_file / --image_path imply their source."""
    if args.batch_size <= 0:
        raise ValueError("--batch_size must be positive")
    implied = [name for name, given in (("file", args.mask_file), ("hdf5", args.hdf5_file),
                                        ("data", args.image_path)) if given]
    source = implied[-1] if implied else args.mask
    if source not in MASK_SOURCES:
        raise ValueError(f"unknown --mask {source!r}; choose one of {sorted(MASK_SOURCES)}")
    return MASK_SOURCES[source](args, cfg)


def run(args) -> FlopsReport:
    announcement = resolve_settings(args)
    cfg = build_config(args)
    masks = mask_batch(args, cfg)
    epoch = clips_per_epoch(args) or (masks.clips_per_epoch if masks is not None else None)
    settings = cost_settings(cfg, masks)
    rows = table_rows(cfg, settings, epoch)
    columns = [c for c in MAIN_COLUMNS if c != "train/epoch" or epoch]
    lines = [
        announcement,
        f"FMamba C={cfg.embed_dim} depth={cfg.depth} d_state={cfg.d_state} headdim={cfg.headdim} "
        f"nheads={cfg.mixer.nheads} chunk={cfg.chunk_size} img={cfg.img_size} patch={cfg.patch_size} "
        f"-> {cfg.num_tokens} tokens/clip; params {count_parameters(cfg):,}"
        + (f"; {epoch:,} clips/epoch" if epoch else ""),
        "FLOPs = multiply + add; training = 3 x forward; per clip = per sample of the batch.",
        "",
        format_table(rows, columns, markdown=args.markdown),
    ]
    if args.verify:
        lines += ["", verify_against_model(cfg, masks)]
    lines += ["", claim_text(cfg, settings)]
    if args.explain:
        lines += [
            "",
            "Kept tokens as the MNI152 mask is loosened (batch of 1):",
            format_table(dilation_sweep(cfg), ["dilation (vox)", "dilation (mm @2mm)",
                                               "brain voxels %", "kept tokens %", "FLOPs saved %"],
                         markdown=args.markdown),
            "",
            "Kept tokens under the batch-shared rule with brains shifted by up to j voxels:",
            format_table(jitter_sweep(cfg, [1, 3, 8], [0, 2, 4, 6]),
                         ["batch", "jitter (vox)", "kept tokens %", "FLOPs saved %"],
                         markdown=args.markdown),
        ]
    return FlopsReport("\n".join(lines), rows)


def claim_text(cfg: FMambaFlopsConfig, settings) -> str:
    implied = implied_clips_per_epoch(settings[0])
    ours = ""
    if len(settings) > 1:
        saved = 1 - settings[1].forward_per_clip / settings[0].forward_per_clip
        ours = f"; this table: {100 * saved:.1f}% ({settings[1].label})"
    return (
        f"Original claim ({ORIGINAL_CLAIM['model']}): {ORIGINAL_CLAIM['all_tokens']:.2e} -> "
        f"{ORIGINAL_CLAIM['brain_tokens']:.2e} FLOPs/epoch = {100 * ORIGINAL_REDUCTION:.1f}% saved, "
        f"i.e. {100 * (1 - ORIGINAL_REDUCTION):.1f}% of tokens kept{ours}.\n"
        "The original's all-token figure corresponds, for this config, to "
        + ", ".join(f"{v:,.0f} clips/epoch ({k})" for k, v in implied.items()) + "."
    )


def verify_against_model(cfg: FMambaFlopsConfig, masks: Optional[MaskBatch]) -> str:
    """Build the real model: compare its parameter count, and the FLOPs that
    torch.utils.flop_counter sees in one forward (aten.mm/addmm = GEMMs, aten.bmm/baddbmm = the
    scan's batched matmuls on the pure-PyTorch path), with the analytic counts."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from neuromamba.models import FMamba

    from ..models.flops import fmamba_forward_flops, ssd_scan_matmul_flops

    lines = []
    settings = [("all tokens", "none", None)]
    if masks is not None:
        settings.append((masks.label + ", batch", "batch", masks.voxel_masks[0]))
    for label, removal, voxel_mask in settings:
        torch.manual_seed(0)
        model = FMamba(embed_dim=cfg.embed_dim, depth=cfg.depth, d_state=cfg.d_state,
                       headdim=cfg.headdim, img_size=cfg.img_size, patch_size=cfg.patch_size,
                       chunk_size=cfg.chunk_size, background_removal=removal,
                       pretraining=True).eval()
        if not lines:
            built = sum(p.numel() for p in model.parameters())
            analytic = count_parameters(config_with(cfg, pretraining=True))
            lines.append(f"parameters: built model {built:,} vs analytic {analytic:,} -> "
                         f"{'OK' if built == analytic else 'MISMATCH'}")
        x = torch.randn(1, 1, *cfg.img_size)
        if voxel_mask is not None:  # brain voxels random, background at the minimum
            brain = torch.from_numpy(np.asarray(voxel_mask))[None, None, ..., None]
            x = torch.where(brain, x.clamp(min=-4), torch.tensor(-5.0))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            out = model(x)
            model.output_layer(out.features)
        counts = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
        length = int(out.lengths[0])
        terms = fmamba_forward_flops(config_with(cfg, pretraining=True), length)
        gemm = sum(v for k, v in terms.items() if k in ("patch_projection", "in_proj", "out_proj",
                                                         "output_layer"))
        # Count the scan at the chunk that ran: the pure CPU path caps it (same results).
        running = config_with(cfg, chunk_size=running_chunk_size(cfg.chunk_size))
        scan = cfg.depth * sum(ssd_scan_matmul_flops(length, running.mixer).values())
        seen_gemm = counts.get("aten.mm", 0) + counts.get("aten.addmm", 0)
        seen_scan = counts.get("aten.bmm", 0) + counts.get("aten.baddbmm", 0)
        lines.append(f"FlopCounterMode, {label} ({length} tokens): GEMMs {seen_gemm:.4e} vs analytic "
                     f"{gemm:.4e}; scan matmuls {seen_scan:.4e} vs analytic {scan:.4e} at chunk "
                     f"{running.chunk_size} -> "
                     f"{'OK' if (seen_gemm, seen_scan) == (gemm, scan) else 'MISMATCH'}")
    if running.chunk_size != cfg.chunk_size:
        lines.append(f"(the pure CPU path scans in chunks of {running.chunk_size}, with the same "
                     f"results; the table above counts --chunk_size {cfg.chunk_size}, as the fused "
                     f"GPU kernels run it)")
    return "\n".join(lines)


def running_chunk_size(chunk_size: int) -> int:
    """The chunk the model's scan uses on this machine's CPU (verify builds the model there)."""
    from neuromamba.models.mamba2 import PURE_CPU_MAX_CHUNK

    return min(int(chunk_size), PURE_CPU_MAX_CHUNK)


def config_with(cfg: FMambaFlopsConfig, **changes) -> FMambaFlopsConfig:
    from ..models.flops import config_for

    return config_for(cfg, **changes)


def write_json(path: str, rows: List[Dict]) -> None:
    atomic_write_text(path, json.dumps(rows, indent=2, default=lambda o: np.asarray(o).tolist()))
