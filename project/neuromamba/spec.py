"""The run spec: what a model is and what input it reads, resolved once per command.

Every entry point (``main.py``, ``predict.py``, ``embed.py``, ``attribute.py``,
``baseline.py``, ``check_flops.py``) resolves these settings here, with one precedence, the
pattern of timm's ``resolve_data_config``:

    an explicit flag (command line or ``--config``)
      > the checkpoint being resumed, fine-tuned or loaded
      > the chosen recipe (``--recipe NAME``: ``configs/recipes/NAME.yaml``)
      > the paper's default (:data:`PAPER_DEFAULTS`, the only default of each setting)

The result is written into the run's settings (``args.yaml``), its ``summary.json`` and every
checkpoint it writes; whatever reads a checkpoint back reads it through
:func:`read_checkpoint_settings` and :func:`spec_from_config`. Two exceptions, both kept from
the original's behaviour and said in one line when they apply: ``--test_only`` evaluates a
checkpoint on its own clip settings unless ``--override_checkpoint_settings``, and a resume
refuses an explicit flag that contradicts its checkpoint (a resumed run never changes its
input or its model).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from neuromamba.checkpoints import EXPORT_SPEC_SUFFIX, export_spec_path  # noqa: F401  (re-exported)
from neuromamba.data.scaling import background_value_for, static_frames_for, static_time_tokens
from neuromamba.paper import CHUNK_SIZE, PAPER_DEFAULTS

DIM_KEYS = ("embed_dim", "depth", "d_state", "headdim")
MODEL_KEYS = DIM_KEYS + ("patch_size", "img_size", "pos_embedding", "clf_head_version",
                         "background_removal")
INPUT_KEYS = ("img_size", "input_scaling_method", "stride_within_seq", "stride_between_seq")
SPEC_KEYS = tuple(dict.fromkeys(MODEL_KEYS + INPUT_KEYS))
# What a pretrained backbone fixes for the run that fine-tunes it (the head, the background
# rule and the clip sampling stay the fine-tuning run's choice).
BACKBONE_KEYS = DIM_KEYS + ("patch_size", "img_size", "pos_embedding", "input_scaling_method")
# Values the original code offers: choosing one of them is running the paper's method.
ORIGINAL_OPTIONS = {
    "clf_head_version": {"linear", "mamba"},
    "input_scaling_method": {"znorm_minback", "znorm_zeroback", "minmax_minback", "minmax_zeroback"},
    "background_removal": {"none", "batch"},
    "pos_embedding": {"nerf"},
}
PAPER_RECIPE = "paper"
# In a stored run config, the flat ``img_size`` counts the raw frames a clip reads (a static
# token, if any, comes on top). Configs written before this key counted the model's frames,
# static token included.
IMG_SIZE_MEANING_KEY, RAW_FRAMES = "img_size_meaning", "raw_frames"
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # configs/recipes links here


# ----------------------------------------------------------------------------------------------
# The spec
# ----------------------------------------------------------------------------------------------


def model_img_size(img_size: Sequence[int], patch_size: Sequence[int],
                   input_scaling_method: str) -> Tuple[int, int, int, int]:
    """The model's clip for a clip of ``img_size`` raw frames: a scaling with a static token
    puts one more time token (``patch T`` frames of the static image) in front of them, so
    ``--img_size T`` reads T frames of the run under every recipe."""
    static = static_frames_for(input_scaling_method, patch_size[3])
    return (*(int(v) for v in img_size[:3]), int(img_size[3]) + static)


def raw_img_size(model_size: Sequence[int], patch_size: Sequence[int],
                 input_scaling_method: str) -> Tuple[int, int, int, int]:
    """The inverse of :func:`model_img_size`: the raw frames a model's clip reads."""
    static = static_frames_for(input_scaling_method, patch_size[3])
    return (*(int(v) for v in model_size[:3]), int(model_size[3]) - static)


@dataclass(frozen=True)
class ModelSpec:
    """What the weights and the head are: changing any of these changes the model.
    ``img_size`` is the model's clip: the raw frames plus a static token, if the input has one."""

    embed_dim: int
    depth: int
    d_state: int
    headdim: int
    patch_size: Tuple[int, int, int, int]
    img_size: Tuple[int, int, int, int]
    pos_embedding: str
    clf_head_version: str
    background_removal: str

    @property
    def token_grid(self) -> Tuple[int, int, int, int]:
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size))


@dataclass(frozen=True)
class InputSpec:
    """What a clip is: its grid and the raw frames it reads (``img_size``, the flag's value),
    how raw values are scaled, how runs are cut."""

    img_size: Tuple[int, int, int, int]
    input_scaling_method: str
    stride_within_seq: int
    stride_between_seq: float
    data_grid: Optional[dict] = None  # the data's world grid (shape, voxel_size, affine)

    @property
    def spatial_shape(self) -> Tuple[int, int, int]:
        return tuple(self.img_size[:3])

    @property
    def num_frames(self) -> int:
        return int(self.img_size[3])


@dataclass(frozen=True)
class RunSpec:
    model: ModelSpec
    input: InputSpec
    recipe: str = PAPER_RECIPE
    departures: Tuple[str, ...] = ()

    # What follows from the spec, defined once (the input scaling's registry entry decides).
    @property
    def static_time_tokens(self) -> int:
        """Leading time tokens of each patch that are the static image (0 or 1)."""
        return static_time_tokens(self.input.input_scaling_method)

    @property
    def static_frames(self) -> int:
        return static_frames_for(self.input.input_scaling_method, self.model.patch_size[3])

    @property
    def background_value(self) -> str:
        """'min' or 'zero': what the backbone's background-token rule looks for."""
        return background_value_for(self.input.input_scaling_method)

    def head_context(self, num_outputs: int, chunk_size: int = CHUNK_SIZE):
        """What the model's head is built from (models.head_base.HeadContext)."""
        from neuromamba.models.head_base import HeadContext

        return HeadContext(self.model.embed_dim, int(num_outputs), self.model.token_grid,
                           self.static_time_tokens, int(chunk_size))

    def as_dict(self) -> dict:
        out = asdict(self)
        out["departures"] = list(self.departures)
        for part in ("model", "input"):
            for key, value in out[part].items():
                if isinstance(value, tuple):
                    out[part][key] = list(value)
        return out


def spec_from_values(values: Mapping, recipe: str = PAPER_RECIPE, departures: Sequence[str] = (),
                     data_grid: Optional[dict] = None) -> RunSpec:
    """A :class:`RunSpec` from resolved flat values (every spec key present; ``img_size`` in
    raw frames, as the flag gives it)."""
    model_values = {k: _frozen(values[k]) for k in MODEL_KEYS}
    model_values["img_size"] = model_img_size(values["img_size"], values["patch_size"],
                                              values["input_scaling_method"])
    model = ModelSpec(**model_values)
    inputs = InputSpec(**{k: _frozen(values[k]) for k in INPUT_KEYS}, data_grid=data_grid)
    return RunSpec(model, inputs, recipe, tuple(departures))


def spec_from_config(config: Mapping) -> RunSpec:
    """The spec a stored run config (a checkpoint's ``hyper_parameters.config`` or an
    ``args.yaml``) stands for. A key missing from an older file means the paper's value: the
    input scaling flag, for one, did not exist when the first checkpoints were written."""
    values = {key: config.get(key, PAPER_DEFAULTS.get(key)) for key in SPEC_KEYS}
    if any(values[k] is None for k in DIM_KEYS):
        from neuromamba.models.variants import resolve_dims

        values.update(resolve_dims(None, *(values[k] for k in DIM_KEYS)))
    if config.get(IMG_SIZE_MEANING_KEY) != RAW_FRAMES:  # an older config: the model's frames
        values["img_size"] = list(raw_img_size(values["img_size"], values["patch_size"],
                                               values["input_scaling_method"]))
    return spec_from_values(values, config.get("recipe", PAPER_RECIPE), config.get("departures", ()),
                            config.get("data_grid"))


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A named set of flag values (``configs/recipes/NAME.yaml``, the ``--config`` format)."""

    name: str
    values: Dict[str, object] = field(default_factory=dict)
    path: Optional[str] = None
    # Values that apply only when fine-tuning a pretrained backbone (--load_model_path): the
    # recipe file's ``finetune:`` mapping.
    finetune: Dict[str, object] = field(default_factory=dict)

    def for_finetuning(self) -> "Recipe":
        """The recipe as it applies to a run with --load_model_path (its ``finetune`` values on top)."""
        return Recipe(self.name, {**self.values, **self.finetune}, self.path, {})


def recipe_names() -> List[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: Optional[str]) -> Recipe:
    """``name`` is a recipe of ``configs/recipes/`` or a path to a YAML file of flag values."""
    from neuromamba.fileio import read_yaml_mapping

    name = name or PAPER_RECIPE
    path = Path(name)
    if path.suffix or len(path.parts) > 1:  # a file, not a recipe's name
        if path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"--recipe {name}: a recipe file must end in .yaml or .yml "
                             f"(or name one of {recipe_names()})")
        if not path.is_file():
            raise FileNotFoundError(f"--recipe {name}: no such file")
    else:
        path = RECIPES_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"--recipe {name!r} is not one of {recipe_names()} (or a YAML file)")
    values = {k.replace("-", "_"): v for k, v in read_yaml_mapping(str(path), "--recipe").items()}
    for key in ("recipe", "config"):
        if key in values:
            raise ValueError(f"--recipe {path}: a recipe cannot set '{key}'")
    finetune = values.pop("finetune", None) or {}
    if not isinstance(finetune, dict):
        raise ValueError(f"--recipe {path}: 'finetune' must be a mapping of flag values")
    finetune = {k.replace("-", "_"): v for k, v in finetune.items()}
    return Recipe(path.stem if path.parent == RECIPES_DIR else str(path), values, str(path), finetune)


# ----------------------------------------------------------------------------------------------
# What a checkpoint fixes
# ----------------------------------------------------------------------------------------------


@dataclass
class CheckpointSettings:
    """What one checkpoint says about the run that wrote it, read once.

    ``config`` is the run config a checkpoint of this project stores (None for released and
    other backbone-only files); ``values`` are the spec settings the checkpoint fixes."""

    path: str
    format: str  # "project", "deepspeed", "export", "released"
    config: Optional[dict]
    values: Dict[str, object]


def read_checkpoint_settings(path: str, allow_pickle: bool = False) -> CheckpointSettings:
    """Read the run settings a checkpoint carries: this project's ``.ckpt``, a Lightning
    DeepSpeed checkpoint folder (the run settings are in ``<tag>/mp_rank_00_model_states.pt``),
    a backbone export with its ``.spec.json``, or a released/bare backbone file, which stands
    for the paper's spec (its dims are read off the tensor shapes)."""
    from neuromamba.checkpoints import (contents_from_object, infer_backbone_config,
                                        torch_load_file)

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        config = _deepspeed_folder_config(p, allow_pickle)
        if config is not None:
            return CheckpointSettings(str(p), "deepspeed", config, _stored_values(config))
        return CheckpointSettings(str(p), "deepspeed", None, _paper_backbone_values())
    obj = torch_load_file(p, allow_pickle)
    if isinstance(obj, dict) and isinstance(obj.get("hyper_parameters"), Mapping) and \
            isinstance(obj["hyper_parameters"].get("config"), Mapping):
        config = dict(obj["hyper_parameters"]["config"])
        return CheckpointSettings(str(p), "project", config, _stored_values(config))
    contents = contents_from_object(obj, p)
    sidecar = export_spec_path(p)
    if sidecar.is_file():
        config = _read_export_spec(sidecar)
        return CheckpointSettings(str(p), "export", config, _stored_values(config))
    dims = {k: v for k, v in infer_backbone_config(contents.backbone).items() if k in DIM_KEYS}
    return CheckpointSettings(str(p), "released", None, {**_paper_backbone_values(), **dims})


def _read_export_spec(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text())
        # the model's img_size (static token included) with no meaning key: read as the model's
        return {**stored["input"], **stored["model"], "recipe": stored.get("recipe", PAPER_RECIPE)}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a backbone spec file ({type(error).__name__}: {error})") from None


def _stored_values(config: Mapping) -> dict:
    """The spec settings as flags give them (``img_size`` in raw frames)."""
    spec = spec_from_config(config)
    return {**asdict(spec.model), **{k: v for k, v in asdict(spec.input).items() if k in INPUT_KEYS}}


def _paper_backbone_values() -> dict:
    """A released file: pretrained by the paper, so the paper's input and token layout."""
    return {k: PAPER_DEFAULTS[k] for k in BACKBONE_KEYS if k in PAPER_DEFAULTS}


def _deepspeed_folder_config(folder: Path, allow_pickle: bool) -> Optional[dict]:
    """The run config Lightning keeps inside a DeepSpeed checkpoint folder, or None."""
    import torch

    from neuromamba.checkpoints import deepspeed_states_file

    states_file = deepspeed_states_file(folder)
    if states_file is None:
        return None
    try:
        state = torch.load(states_file, map_location="cpu", weights_only=True)
    except Exception:  # DeepSpeed's own entries can need unpickling
        if not allow_pickle:
            from neuromamba.checkpoints import ALLOW_PICKLE_HINT

            raise ValueError(f"{folder} is a DeepSpeed checkpoint folder; reading its run settings "
                             f"needs unpickling, which can run arbitrary code: {ALLOW_PICKLE_HINT}") from None
        state = torch.load(states_file, map_location="cpu", weights_only=False)
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    config = hparams.get("config") if isinstance(hparams, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


# ----------------------------------------------------------------------------------------------
# Resolution
# ----------------------------------------------------------------------------------------------


@dataclass
class Resolution:
    """Resolved values of the spec settings, where each came from, and what departs from the
    paper."""

    values: Dict[str, object]
    sources: Dict[str, str]
    departures: List[str]
    recipe: str

    def spec(self, data_grid: Optional[dict] = None) -> RunSpec:
        return spec_from_values(self.values, self.recipe, self.departures, data_grid)

    def announcement(self) -> str:
        """One line: the recipe, and every setting where the run departs from the paper."""
        what = "; ".join(self.departures) if self.departures else "the paper's settings throughout"
        return f"recipe {self.recipe}: {what}"


def resolve(explicit: Mapping, checkpoint: Optional[CheckpointSettings] = None,
            checkpoint_keys: Sequence[str] = SPEC_KEYS, recipe: Optional[Recipe] = None,
            keys: Sequence[str] = SPEC_KEYS, checkpoint_first: bool = False,
            skip_departures: Sequence[str] = ()) -> Resolution:
    """Resolve ``keys`` by the one precedence: explicit > checkpoint > recipe > paper.

    ``explicit`` holds the values the user gave (``None`` or absent: not given; the dims may
    also come as ``model_size``); ``checkpoint_keys`` are those the checkpoint fixes for this
    use of it. ``checkpoint_first`` puts the checkpoint above the flags (``--test_only``)."""
    recipe = recipe or Recipe(PAPER_RECIPE)
    layers = [("flag", _given(explicit)),
              ("checkpoint", {k: v for k, v in (checkpoint.values if checkpoint else {}).items()
                              if k in checkpoint_keys}),
              ("recipe", _given(recipe.values)),
              ("paper", dict(PAPER_DEFAULTS))]
    if checkpoint_first:
        layers[0], layers[1] = layers[1], layers[0]
    values, sources = {}, {}
    wanted = [k for k in keys if k not in DIM_KEYS]
    for key in wanted:
        for source, layer in layers:
            if layer.get(key) is not None:
                values[key], sources[key] = _plain(layer[key]), source
                break
    if any(k in keys for k in DIM_KEYS):
        values.update(_resolve_dims(layers, sources))
    # The recipe recorded is the one that resolved the values: a checkpoint that fixes every
    # value (--test_only, a resume) brings its own run's recipe, whatever --recipe says.
    name, checkpoint_recipe = recipe.name, None
    if checkpoint is not None:
        checkpoint_recipe = (checkpoint.config or {}).get("recipe", PAPER_RECIPE)
        if "checkpoint" in sources.values() and not {"recipe", "paper"} & set(sources.values()):
            name = checkpoint_recipe
    departures = [_departure(k, values[k], sources[k], checkpoint_recipe if checkpoint_recipe != name else None)
                  for k in wanted if k not in skip_departures and _departs(k, values[k], sources[k])]
    return Resolution(values, sources, departures, name)


def _given(layer: Mapping) -> dict:
    return {k: v for k, v in layer.items() if v is not None}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _resolve_dims(layers, sources) -> dict:
    """The dims come as a group from the first layer naming any of them (a checkpoint's dims
    are not mixed with a recipe's); within it models.variants.resolve_dims fills the rest."""
    from neuromamba.models.variants import resolve_dims

    for source, layer in layers:
        if any(layer.get(k) is not None for k in DIM_KEYS + ("model_size",)):
            dims = resolve_dims(layer.get("model_size"), *(layer.get(k) for k in DIM_KEYS))
            sources.update({k: source for k in DIM_KEYS})
            return dims
    sources.update({k: "paper" for k in DIM_KEYS})
    return resolve_dims(None, None, None, None, None)


def _departs(key: str, value, source: str) -> bool:
    paper = PAPER_DEFAULTS.get(key)
    if source == "paper" or not differs(value, paper):
        return False
    if source == "recipe":
        return True
    # A flag or a checkpoint choosing one of the original's own options runs the paper's method.
    options = ORIGINAL_OPTIONS.get(key)
    return value not in options if options is not None else differs(value, paper)


def _departure(key: str, value, source: str, checkpoint_recipe: Optional[str] = None) -> str:
    paper = PAPER_DEFAULTS.get(key)
    by = "" if source == "recipe" else f", from the {source}"
    if source == "checkpoint" and checkpoint_recipe:
        by += f" (recipe {checkpoint_recipe})"
    if paper is None:
        return f"{key} {show(value)}{by}"
    return f"{key} {show(value)} (paper: {show(paper)}{by})"


def check_clip_layout(img_size: Sequence[int], patch_size: Sequence[int]) -> None:
    """The clip and token sizes every entry point accepts: 4 positive values each, the clip a
    whole number of patches on every axis. One readable sentence naming the flag otherwise."""
    for flag, values in (("img_size", list(img_size)), ("patch_size", list(patch_size))):
        if len(values) != 4:
            raise ValueError(f"--{flag} {show(values)}: needs 4 values (D H W T)")
        if any(int(v) < 1 for v in values):
            raise ValueError(f"--{flag} {show(values)}: every value must be positive")
    if any(int(i) % int(p) for i, p in zip(img_size, patch_size)):
        raise ValueError(f"--img_size {show(img_size)} is not divisible by --patch_size "
                         f"{show(patch_size)} in every axis")


def show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a or []) != list(b or [])
    return a != b


def conflicts(explicit: Mapping, checkpoint: CheckpointSettings, keys: Sequence[str],
              resolved: Mapping) -> List[str]:
    """``--flag value (checkpoint: value)`` for each explicit flag that contradicts the
    checkpoint (the dims compared after resolving the flags' variant)."""
    out = []
    for key in keys:
        given = resolved.get(key) if key in DIM_KEYS else explicit.get(key)
        dim_given = key in DIM_KEYS and any(explicit.get(k) is not None for k in DIM_KEYS + ("model_size",))
        if (given is None or (key in DIM_KEYS and not dim_given)) or key not in checkpoint.values:
            continue
        if differs(given, checkpoint.values[key]):
            out.append(f"--{key} {show(given)} (checkpoint: {show(checkpoint.values[key])})")
    return out
