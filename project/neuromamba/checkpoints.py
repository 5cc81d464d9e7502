"""Reading NeuroMamba checkpoints in every supported format and loading them strictly.

Formats (SPEC §5), told apart by their layout, not by the file name:

* ``released``: the published ``1M_E128.pt`` / ``3M_E192.pt`` / ``5M_E256.pt``: a flat dict of
  tensors whose keys start with ``_forward_module.model.`` (113 keys for 12 blocks);
* ``lightning``: this project's ``.ckpt`` files: ``{"state_dict": {"model.<key>": ..., "head.<key>": ...}, ...}``
  (keys may also carry ``_forward_module.``);
* ``deepspeed``: a DeepSpeed checkpoint folder (``latest`` + a tag folder), consolidated to fp32
  with DeepSpeed's own zero-to-fp32 utility;
* ``bare``: a plain backbone ``state_dict``.

Older mamba_ssm named the depthwise conv ``conv_xBC``; it is renamed to ``conv1d``. Files are
read with ``torch.load(weights_only=True)``: unpickling can run arbitrary code, so it happens
only when the caller passes ``allow_pickle=True`` (the CLI's ``--allow_pickle``).
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from .fileio import atomic_path

PathLike = Union[str, os.PathLike]

RELEASED_PREFIX = "_forward_module.model."
# Wrappers that prefix every key: Lightning+DeepSpeed/DDP, DDP/DataParallel, torch.compile.
WRAPPER_PREFIXES = ("_forward_module.", "module.", "_orig_mod.")
BACKBONE_PREFIX = "model."  # the LightningModule attribute holding the FMamba
KEY_RENAMES = ((".conv_xBC.", ".conv1d."),)
OUTPUT_LAYER_PREFIX = "output_layer."
EXPORT_SPEC_SUFFIX = ".spec.json"
ALLOW_PICKLE_HINT = "pass --allow_pickle (allow_pickle=True) only if you trust where it came from"


class CheckpointMismatchError(ValueError):
    """The checkpoint's backbone keys or shapes do not match the model."""


@dataclass
class CheckpointContents:
    """A checkpoint split into the backbone's state_dict (keys relative to FMamba) and the rest
    (e.g. a Lightning checkpoint's ``head.*`` keys, kept with their prefix)."""

    path: str
    format: str
    backbone: Dict[str, torch.Tensor]
    other: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LoadReport:
    path: str
    format: str
    loaded: List[str]
    dropped: List[str]  # in the checkpoint but deliberately not loaded (the output layer)
    ignored: List[str]  # non-backbone entries of the checkpoint (e.g. head.*)
    missing: List[str] = field(default_factory=list)  # only non-empty with strict=False
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def checkpoint_path(path: PathLike, flag: str, prefer: str = "best.ckpt") -> str:
    """The checkpoint a flag names. A run folder of project/main.py stands for its
    ``checkpoints/<prefer>`` (``best.ckpt``, or ``last.ckpt`` for a resume; the other one if
    it is missing). A path that does not exist is refused naming what its folder holds."""
    p = Path(path)
    if p.is_dir() and (p / "checkpoints").is_dir():
        for name in (prefer, "last.ckpt" if prefer != "last.ckpt" else "best.ckpt"):
            if (p / "checkpoints" / name).exists():
                return str(p / "checkpoints" / name)
        raise FileNotFoundError(f"{flag} {p}: a run folder without checkpoints/{prefer} or last.ckpt")
    if p.exists():
        return str(p)
    folder = p.parent
    held = sorted(q.name for q in folder.iterdir() if q.suffix == ".ckpt" or (q / "latest").is_file()) \
        if folder.is_dir() else []
    where = f"; {folder} holds: {', '.join(held)}" if held else \
        (f"; {folder} holds no checkpoint" if folder.is_dir() else f"; no folder {folder}")
    raise FileNotFoundError(f"{flag} {p}: no such file{where}")


def run_folder_of(checkpoint: PathLike) -> Path | None:
    """The run folder a checkpoint of project/main.py lies in (``<run>/checkpoints/x.ckpt``)."""
    p = Path(checkpoint)
    return p.parent.parent if p.parent.name == "checkpoints" else None


def recorded_file(recorded: PathLike, run_dir: PathLike | None) -> Path:
    """A file a run recorded by its absolute path (its split file), where it is now: the path
    itself while it exists, else the same file inside ``run_dir`` when the run folder was moved
    or copied (a relative record is relative to ``run_dir``). The recorded path when neither
    exists, for the caller's message."""
    p = Path(recorded)
    if run_dir is None:
        return p
    if not p.is_absolute():
        return Path(run_dir) / p
    if p.exists():
        return p
    for depth in (2, 1):  # <run>/splits/split_x.txt, then a file directly in the run folder
        moved = Path(run_dir).joinpath(*p.parts[-depth:])
        if moved.exists():
            return moved
    return p


def require_torch_archive(path: PathLike, flag: str) -> None:
    """Reject a file that is not a ``torch.save`` zip archive (truncated, or another format)
    with one sentence naming ``flag``, before Lightning or torch fail deep inside."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"{flag} {path}: not a PyTorch checkpoint (not a zip archive: truncated, "
                         "or another format?)")


def torch_load_file(path: PathLike, allow_pickle: bool = False):
    """``torch.load`` on the CPU; a file it cannot read raises one readable ``ValueError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # torch raises many types for bad files; re-raise one readable one
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if not allow_pickle and "weights only load failed" in str(error).lower():
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
            what = f" (first one: {found.group(1)})" if found else ""
            raise ValueError(
                f"checkpoint {path} contains pickled Python objects{what}, which torch.load(weights_only=True) "
                f"refuses to load. Unpickling can run arbitrary code: {ALLOW_PICKLE_HINT}"
            ) from error
        raise ValueError(
            f"could not read checkpoint {path}: {type(error).__name__}: {first_line} "
            "(is the file truncated or not a PyTorch checkpoint?)"
        ) from error


def _is_deepspeed_folder(path: Path) -> bool:
    return (path / "latest").is_file() or any(path.glob("*/*_model_states.pt"))


def _read_deepspeed_folder(path: Path, allow_pickle: bool) -> Mapping[str, torch.Tensor]:
    if not _is_deepspeed_folder(path):
        raise ValueError(
            f"checkpoint folder {path} is not a DeepSpeed checkpoint (no 'latest' file and no "
            "<tag>/*_model_states.pt); give a checkpoint file or a DeepSpeed checkpoint folder"
        )
    if not allow_pickle:
        raise ValueError(
            f"{path} is a DeepSpeed checkpoint folder; DeepSpeed stores pickled Python objects that "
            f"can only be read by unpickling, which can run arbitrary code: {ALLOW_PICKLE_HINT}. "
            "To share it safely, load it once that way and save it with "
            "neuromamba.checkpoints.save_released_format"
        )
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # heavy, lazy

    return get_fp32_state_dict_from_zero_checkpoint(str(path))


# Keys DeepSpeed adds to a *_model_states.pt file; the rest is Lightning's checkpoint (epoch,
# global step, callbacks, hyper-parameters), kept there as DeepSpeed's client state.
_DEEPSPEED_KEYS = {"module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes",
                   "shared_params", "frozen_param_fragments", "lr_scheduler", "data_sampler",
                   "random_ltd", "sparse_tensor_module_names", "skipped_steps", "global_steps",
                   "global_samples", "dp_world_size", "mp_world_size", "ds_config", "ds_version"}


def read_deepspeed_as_lightning(folder: PathLike, allow_pickle: bool = False) -> dict:
    """A Lightning checkpoint dict from a DeepSpeed checkpoint folder of any ZeRO stage: its
    client state (hyper-parameters, epoch, step, callbacks) and every rank's shards consolidated
    to the fp32 ``state_dict`` (DeepSpeed's zero_to_fp32), keys as the LightningModule's."""
    folder = Path(folder)
    state = _read_deepspeed_folder(folder, allow_pickle)  # checks the layout and allow_pickle
    states_file = deepspeed_states_file(folder)
    client = torch_load_file(states_file, allow_pickle=True) if states_file else {}
    checkpoint = {k: v for k, v in client.items() if k not in _DEEPSPEED_KEYS}
    checkpoint["state_dict"] = {_strip_wrappers(k): v for k, v in state.items()}
    return checkpoint


def deepspeed_states_file(folder: PathLike) -> Optional[Path]:
    """The ``*model_states.pt`` file of a DeepSpeed folder's latest tag (``latest`` names it;
    Lightning's folders use ``checkpoint``), which holds Lightning's client state; or None."""
    folder = Path(folder)
    tag_file = folder / "latest"
    tag = tag_file.read_text().strip() if tag_file.is_file() else "checkpoint"
    found = sorted((folder / tag).glob("*model_states.pt")) or sorted(folder.glob("*/*model_states.pt"))
    return found[0] if found else None


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _rename(key: str) -> str:
    for old, new in KEY_RENAMES:
        key = key.replace(old, new)
    return key


def _check_tensors(state: Mapping, path: Path) -> None:
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"checkpoint {path} is not a state_dict of tensors: entries {bad[:10]} are not tensors "
            f"(top-level keys: {list(state)[:10]})"
        )


def _split_state(state: Mapping[str, torch.Tensor], path: Path):
    """Strip wrapper prefixes, then separate backbone keys from the rest."""
    stripped = {_strip_wrappers(str(k)): v for k, v in state.items()}
    if len(stripped) != len(state):
        raise ValueError(f"checkpoint {path} has keys that collide after removing wrapper prefixes {WRAPPER_PREFIXES}")
    if any(k.startswith(BACKBONE_PREFIX) for k in stripped):  # Lightning layout: model.* + head.*
        backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in stripped.items() if k.startswith(BACKBONE_PREFIX)}
        other = {k: v for k, v in stripped.items() if not k.startswith(BACKBONE_PREFIX)}
    else:
        backbone, other = stripped, {}
    renamed = {_rename(k): v for k, v in backbone.items()}
    if len(renamed) != len(backbone):
        raise ValueError(f"checkpoint {path} has both conv_xBC and conv1d names for the same layer")
    return renamed, other


def read_checkpoint(path: PathLike, allow_pickle: bool = False) -> CheckpointContents:
    """Read any supported checkpoint into a :class:`CheckpointContents`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        state = _read_deepspeed_folder(path, allow_pickle)
        _check_tensors(state, path)
        return _contents(state, path, "deepspeed")
    return contents_from_object(torch_load_file(path, allow_pickle), path)


def contents_from_object(obj, path: PathLike) -> CheckpointContents:
    """Tell the format of an object ``torch.load`` read from ``path`` and split its weights
    (so a caller that already read the file need not read it again)."""
    path = Path(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors")
    if isinstance(obj.get("state_dict"), Mapping):
        fmt, state = "lightning", obj["state_dict"]
    elif isinstance(obj.get("module"), Mapping):  # a single DeepSpeed *_model_states.pt file
        fmt, state = "deepspeed", obj["module"]
    else:
        state = obj
        keys = [str(k) for k in obj]
        fmt = "released" if keys and all(k.startswith(RELEASED_PREFIX) for k in keys) else "bare"
    _check_tensors(state, path)
    return _contents(state, path, fmt)


def _contents(state, path: Path, fmt: str) -> CheckpointContents:
    backbone, other = _split_state(state, path)
    if not backbone:
        raise ValueError(f"checkpoint {path} ({fmt}) holds no backbone weights; keys: {list(state)[:10]}")
    return CheckpointContents(str(path), fmt, backbone, other)


def read_state_dict(path: PathLike, allow_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """The backbone state_dict of any supported checkpoint, keys relative to FMamba
    (``embedder.projection``, ``mamba_layers.0.1.conv1d.weight``, ...)."""
    return read_checkpoint(path, allow_pickle).backbone


# ----------------------------------------------------------------------------------------------
# Describing and loading
# ----------------------------------------------------------------------------------------------


def infer_backbone_config(state: Mapping[str, torch.Tensor]) -> dict:
    """Guess ``embed_dim, depth, d_state, headdim, num_tokens`` from a backbone state_dict
    (ngroups=1, expand=2), for error messages and for building a matching model."""
    config: dict = {}
    if "embedder.projection" in state:
        config["embed_dim"] = int(state["embedder.projection"].shape[1])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"mamba_layers\.(\d+)\.", k))}
    config["depth"] = len(blocks)
    a_log, in_proj, inner = (state.get(f"mamba_layers.0.1.{n}") for n in ("A_log", "in_proj.weight", "norm.weight"))
    if a_log is not None and in_proj is not None and inner is not None:
        nheads, d_inner = a_log.shape[0], inner.shape[0]
        config["headdim"] = d_inner // nheads
        config["d_state"] = (in_proj.shape[0] - 2 * d_inner - nheads) // 2
    if "embedder.pos" in state:
        config["num_tokens"] = int(state["embedder.pos"].shape[1])
    config["has_output_layer"] = any(k.startswith(OUTPUT_LAYER_PREFIX) for k in state)
    return config


def compare_state_dicts(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]):
    """(missing, unexpected, mismatched) key lists; mismatched entries carry both shapes."""
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, mismatched


def load_pretrained(model: nn.Module, path: PathLike, allow_pickle: bool = False, strict: bool = True) -> LoadReport:
    """Load every backbone key of a checkpoint into ``model`` (an FMamba).

    The pretraining ``output_layer.*`` is dropped when the model has none (fine-tuning). With
    ``strict=True`` (the default) any missing, unexpected or wrongly shaped key raises
    :class:`CheckpointMismatchError` listing them; ``strict=False`` loads what matches and
    reports the rest in the returned :class:`LoadReport`.
    """
    contents = read_checkpoint(path, allow_pickle)
    state = dict(contents.backbone)
    model_state = model.state_dict()
    dropped = []
    if not any(k.startswith(OUTPUT_LAYER_PREFIX) for k in model_state):
        dropped = sorted(k for k in state if k.startswith(OUTPUT_LAYER_PREFIX))
        for k in dropped:
            del state[k]
    missing, unexpected, mismatched = compare_state_dicts(model_state, state)
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatchError(
            _mismatch_message(contents, missing, unexpected, mismatched, infer_backbone_config(contents.backbone),
                              infer_backbone_config(model_state))
        )
    bad = set(unexpected) | {m.split(":")[0] for m in mismatched}
    loadable = {k: v for k, v in state.items() if k not in bad}
    model.load_state_dict(loadable, strict=strict)
    return LoadReport(contents.path, contents.format, sorted(loadable), dropped, sorted(contents.other),
                      missing, unexpected, mismatched)


def _mismatch_message(contents: CheckpointContents, missing, unexpected, mismatched, ckpt_cfg, model_cfg) -> str:
    lines = [f"checkpoint {contents.path} ({contents.format} format) does not match the model:"]
    if missing:
        lines.append(f"  missing keys (in the model, not in the checkpoint) [{len(missing)}]: {', '.join(missing)}")
    if unexpected:
        shapes = [f"{k} {tuple(contents.backbone[k].shape)}" if k in contents.backbone else k for k in unexpected]
        lines.append(f"  unexpected keys (in the checkpoint, not in the model) [{len(unexpected)}]: {', '.join(shapes)}")
    if mismatched:
        lines.append(f"  shape mismatches [{len(mismatched)}]: {'; '.join(mismatched)}")
    fields = ("embed_dim", "depth", "d_state", "headdim", "num_tokens")
    describe = lambda cfg: ", ".join(f"{f}={cfg[f]}" for f in fields if f in cfg)  # noqa: E731
    lines.append(f"  the checkpoint looks like {describe(ckpt_cfg)}; the model has {describe(model_cfg)} "
                 "(num_tokens follows --img_size / --patch_size)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def export_spec_path(path) -> Path:
    """Where a backbone export keeps its run spec: ``<file>.spec.json`` beside it."""
    return Path(str(path) + EXPORT_SPEC_SUFFIX)


def save_released_format(model: nn.Module, path: PathLike, spec: Optional[dict] = None) -> Path:
    """Write the backbone as a flat tensor dict with the released ``_forward_module.model.``
    prefix, readable with ``torch.load(weights_only=True)``. Written atomically. With ``spec``
    (a :meth:`neuromamba.spec.RunSpec.as_dict`), the run spec goes beside it in
    ``<path>.spec.json``, which every entry point reads back; the tensor file stays in the
    released layout that other tools load."""
    import json

    from neuromamba.fileio import atomic_write_text

    path = Path(path)
    state = {RELEASED_PREFIX + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    if spec is not None:
        atomic_write_text(export_spec_path(path), json.dumps(spec, indent=2) + "\n")
    return path
