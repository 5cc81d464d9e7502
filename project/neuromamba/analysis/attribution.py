"""Integrated-gradients attributions of a fine-tuned model, per voxel, averaged over clips.

IG (Sundararajan et al. 2017, via Captum) integrates the gradient of the target output along
the straight path from a baseline ``x0`` to the clip ``x``:
``IG_i = (x_i - x0_i) · ∫_0^1 ∂F(x0 + α(x - x0))/∂x_i dα``, with ``Σ_i IG_i ≈ F(x) - F(x0)``.

Baselines (``BASELINES``): ``brain_mean`` (default) sets every brain voxel to the clip's mean
brain value and leaves the background (the minimum under ``*_minback``, 0 under ``*_zeroback``)
untouched, so the attribution explains the brain's spatial/temporal pattern, the model's
background-token mask is identical along the whole path and F(x0) is defined (completeness can
be checked). ``background`` (everything at the background value, "no brain") also credits the
mere presence of brain tissue, which spreads attribution over the whole brain.

The input is the voxel grid itself, so attributions are per voxel: a clip's ``(D, H, W, T)`` map
is reduced over its frames for the 3D map, or laid on the run's timeline for the 4D map, and
averaged over a subject's clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch

from .encoder import Encoder

REDUCTIONS = {
    "abs": lambda a: np.abs(a),  # magnitude: where the model looks
    "signed": lambda a: a,  # direction: towards (+) or away from (-) the target
}


@dataclass
class SubjectAttribution:
    volume_3d: np.ndarray  # (D, H, W) mean over clips of the frame-summed attribution
    volume_4d: Optional[np.ndarray]  # (D, H, W, frames) per run frame, mean over covering clips
    target: int
    num_clips: int
    completeness_error: float  # mean relative |Σ IG - (F(x) - F(x0))| (NaN: not computable)
    output: float = float("nan")  # mean over clips: the target class's probability, or the value
    probability_output: bool = True  # classification (a probability) or regression (a value)
    # Maps are masked to the run's brain (the union of its clips' stored masks); the share of
    # the total |attribution| that fell outside and was removed (NaN: no stored mask).
    outside_brain_share: float = float("nan")


def _background_level(x: torch.Tensor, background_value: str) -> torch.Tensor:
    """Per-sample background value, shaped to broadcast: the minimum ("min") or 0 ("zero")."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    if background_value == "zero":
        return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype).view(shape)
    return x.detach().flatten(1).amin(dim=1).view(shape)


def brain_mean_baseline(x: torch.Tensor, background_value: str) -> torch.Tensor:
    """Every brain voxel (≠ background) at the clip's mean brain value, background unchanged:
    "this brain, without any spatial or temporal pattern". The brain mask, hence the model's
    kept tokens, is the same at every point of the path, and F at the baseline is defined."""
    level = _background_level(x, background_value)
    brain = x.detach() != level
    counts = brain.flatten(1).sum(1).clamp(min=1)
    means = (x.detach() * brain).flatten(1).sum(1) / counts
    means = means.view(level.shape)
    if bool((means == level).any()):
        raise ValueError("a clip's mean brain value equals its background value, as in every "
                         "demeaned input (voxel_demean, voxel_demean_static's fluctuations, "
                         "znorm_demean: each brain voxel's mean is 0, the background's value), so a "
                         "'mean brain' baseline would be no brain at all; use --baseline "
                         "background, whose path starts from no brain explicitly")
    return torch.where(brain, means.expand_as(x), x.detach())


def background_baseline(x: torch.Tensor, background_value: str) -> torch.Tensor:
    """Every voxel at the background value: "no brain at all". No token is brain at the
    baseline itself, so F(x0) (and the completeness check) is undefined for models that drop
    background tokens; Gauss-Legendre nodes never evaluate α = 0."""
    return _background_level(x, background_value).expand_as(x).clone()


BASELINES = {"brain_mean": brain_mean_baseline, "background": background_baseline}


def model_output_fn(encoder: Encoder, brain_mask: Optional[torch.Tensor] = None):
    """``x -> (B, K)`` head outputs (logits or standardised values) for Captum; the clip's
    ``brain_mask`` (1, D, H, W) is repeated over Captum's interpolation batch."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        mask = None if brain_mask is None else brain_mask.expand(x.shape[0], *brain_mask.shape[1:])
        return encoder.head(encoder.backbone(x, mask)).float()

    return forward


def choose_target(encoder: Encoder, mean_output: torch.Tensor, target: Optional[int]) -> int:
    """The class to explain: the given index, else the class with the highest mean
    probability over the clips (``mean_output``); regression always explains output 0."""
    if encoder.task != "classification":
        return 0
    if target is not None:
        if not 0 <= int(target) < int(encoder.num_classes or 0):
            raise ValueError(f"--target {target} is not a class index in [0, {encoder.num_classes})")
        return int(target)
    return int(mean_output.argmax())


def clip_attribution(encoder: Encoder, x: torch.Tensor, target: int, n_steps: int = 32,
                     internal_batch_size: Optional[int] = None, baseline: str = "brain_mean",
                     brain_mask: Optional[torch.Tensor] = None):
    """IG of one clip ``x (1, 1, D, H, W, T)`` -> (``(D, H, W, T)`` attribution, relative
    completeness error ``|Σ IG - (F(x) - F(x0))| / |F(x) - F(x0)|``, NaN where F(x0) is
    undefined: the ``background`` baseline with a model that drops background tokens)."""
    from captum.attr import IntegratedGradients

    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {sorted(BASELINES)}")
    x0 = BASELINES[baseline](x, getattr(encoder.model, "background_value", "min"))
    forward = model_output_fn(encoder, brain_mask)
    attr = IntegratedGradients(forward).attribute(
        x, baselines=x0, target=target, n_steps=n_steps, method="gausslegendre",
        internal_batch_size=internal_batch_size)
    error = float("nan")
    removal = getattr(encoder.model, "background_removal", "none")
    # With a stored brain mask the baseline keeps the clip's tokens, so F(x0) is defined.
    if baseline == "brain_mean" or removal == "none" or brain_mask is not None:
        with torch.no_grad():
            gap = float(forward(x)[0, target] - forward(x0)[0, target])
        error = abs(float(attr.sum()) - gap) / max(abs(gap), 1e-12)
    return attr[0, 0].detach().cpu().numpy(), error


def subject_attribution(
    encoder: Encoder, batches: Iterable[dict], target: Optional[int] = None, n_steps: int = 32,
    reduce: str = "abs", num_frames: Optional[int] = None, stride_within_seq: int = 1,
    internal_batch_size: Optional[int] = None, device: str = "cpu", baseline: str = "brain_mean",
) -> SubjectAttribution:
    """IG over all clips in ``batches`` (one subject's, one at a time), averaged. ``num_frames``
    (the run length) enables the 4D map; clips are placed at their ``start`` frames."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {sorted(REDUCTIONS)}")
    encoder.use_per_sample_tokens()
    encoder.to(device)
    clips = []
    for b in batches:
        masks = b["brain_mask"].split(1) if "brain_mask" in b else [None] * len(b["fmri"])
        for x, s, m in zip(b["fmri"].split(1), np.asarray(b["start"]).reshape(-1), masks):
            clips.append((x[None] if x.dim() == 5 else x, int(s), m))
    if not clips:
        raise ValueError("no clips to attribute")
    clips = [(x.to(device=device, dtype=torch.float32), s, None if m is None else m.to(device))
             for x, s, m in clips]
    with torch.no_grad():  # the model's output, mean over the clips: picks and reports the target
        said = torch.cat([encoder.predict(x, m) for x, _, m in clips]).float().mean(0)
    target = choose_target(encoder, said, target)
    reducer = REDUCTIONS[reduce]
    sum3d, deltas = None, []
    sum4d = count4d = None
    # A static-image token (the tuned input) leads each clip: no run frame of its own.
    static = int(encoder.img_size[3]) - int(encoder.clip_size[3])
    for x, start, mask in clips:
        attr, delta = clip_attribution(encoder, x, target, n_steps, internal_batch_size, baseline,
                                       mask)
        deltas.append(delta)
        reduced = reducer(attr)
        sum3d = reduced.sum(-1) if sum3d is None else sum3d + reduced.sum(-1)
        reduced = reduced[..., static:]
        if num_frames:
            if sum4d is None:
                sum4d = np.zeros(reduced.shape[:3] + (int(num_frames),), np.float64)
                count4d = np.zeros(int(num_frames))
            frames = start + stride_within_seq * np.arange(reduced.shape[-1])
            if frames[-1] >= num_frames:
                raise ValueError(f"clip at frame {start} runs past the run's {num_frames} frames")
            sum4d[..., frames] += reduced
            count4d[frames] += 1
    output = float(said[target] if encoder.task == "classification" else said[0])
    n = len(clips)
    volume_3d = sum3d / n
    volume_4d = None
    if sum4d is not None:
        volume_4d = sum4d / np.maximum(count4d, 1)
    outside = float("nan")
    masks = [m for _, _, m in clips if m is not None]
    if masks:  # only the brain is shown: outside it there is no anatomy to attribute to
        brain = torch.stack([m.reshape(m.shape[-3:]).bool().cpu() for m in masks]).any(0).numpy()
        total = float(np.abs(volume_3d).sum())
        outside = float(np.abs(volume_3d[~brain]).sum()) / total if total > 0 else 0.0
        volume_3d = np.where(brain, volume_3d, 0.0)
        if volume_4d is not None:
            volume_4d = np.where(brain[..., None], volume_4d, 0.0)
    return SubjectAttribution(volume_3d.astype(np.float32),
                              None if volume_4d is None else volume_4d.astype(np.float32), target, n,
                              float(np.mean(deltas)), output, encoder.task == "classification",
                              outside)


def mass_in_region(volume: np.ndarray, region: np.ndarray, within: Optional[np.ndarray] = None):
    """(share of |attribution| inside ``region``, the region's share of the voxels) — both over
    ``within`` (e.g. the brain) if given. A ratio > 1 means the map concentrates there."""
    volume = np.abs(np.asarray(volume, dtype=np.float64))
    region = np.asarray(region, bool)
    within = np.ones_like(region) if within is None else np.asarray(within, bool)
    total = volume[within].sum()
    if total == 0:
        return 0.0, float(region[within].mean())
    return float(volume[within & region].sum() / total), float(region[within].mean())
