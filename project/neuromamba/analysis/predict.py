"""Predictor mode: a fine-tuned checkpoint applied to one new NIfTI run.

Per-clip outputs are averaged over every clip of the run (the subject-level rule of
evaluation): class probabilities for classification, values in the target's original units
for regression (the checkpoint stores the train-split mean/std used for standardising).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from neuromamba.data.clip_buffers import collate_clips
from neuromamba.data.datasets import batch_to_model

from .encoder import Encoder

CLASS_MAPPING_FILE = "label_classes.json"  # written by the data module into the run folder


@dataclass
class Prediction:
    task: str
    num_clips: int
    source: str
    checkpoint: str
    probabilities: Optional[Dict[str, float]] = None  # class name -> mean probability
    predicted_class: Optional[str] = None
    value: Optional[float] = None  # regression, original units
    value_std_over_clips: Optional[float] = None
    target: str = ""
    per_clip: Optional[List] = None  # every clip's output, on request

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def text(self) -> str:
        head = f"{self.source}: {self.num_clips} clips, {self.task}"
        if self.target:
            head += f" of {self.target!r}"
        if self.task == "classification":
            lines = [head, "class  probability"]
            lines += [f"{name}  {p:.4f}" for name, p in self.probabilities.items()]
            lines.append(f"predicted: {self.predicted_class}")
            return "\n".join(lines)
        return (f"{head}\nprediction: {self.value:.4f} (original units; std over clips "
                f"{self.value_std_over_clips:.4f})")


def find_class_names(checkpoint: str, num_classes: int, explicit: Optional[List[str]] = None):
    """(class names, target column): ``explicit`` names, else the run folder's
    label_classes.json (next to the checkpoint or one/two folders up), else "0".."K-1"."""
    if explicit:
        if len(explicit) != num_classes:
            raise ValueError(f"--class_names gives {len(explicit)} names for {num_classes} classes")
        return list(explicit), ""
    ckpt = Path(checkpoint).resolve()
    for folder in (ckpt.parent, ckpt.parent.parent, ckpt.parent.parent.parent):
        path = folder / CLASS_MAPPING_FILE
        if path.exists():
            mapping = json.loads(path.read_text())
            classes = sorted(mapping["classes"].items(), key=lambda kv: kv[1])
            if len(classes) == num_classes:
                return [name for name, _ in classes], mapping.get("column", "")
    return [str(i) for i in range(num_classes)], ""


@torch.no_grad()
def predict_dataset(encoder: Encoder, dataset, batch_size: int = 4, device: str = "cpu") -> np.ndarray:
    """Per-clip predictions ``(n_clips, K)`` (probabilities or original-unit values)."""
    encoder.use_per_sample_tokens()
    encoder.to(device)
    outputs = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_clips):
        batch = batch_to_model(batch, dataset.spec, device)  # scaled on the device
        outputs.append(encoder.predict(batch["fmri"], batch.get("brain_mask")).cpu().numpy())
    return np.concatenate(outputs)


def summarise(encoder: Encoder, per_clip: np.ndarray, source: str,
              class_names: Optional[List[str]] = None, keep_per_clip: bool = False) -> Prediction:
    pred = Prediction(task=encoder.task, num_clips=int(len(per_clip)), source=source,
                      checkpoint=encoder.source)
    if encoder.task == "classification":
        names, column = find_class_names(encoder.source, per_clip.shape[1], class_names)
        mean = per_clip.mean(axis=0)
        pred.probabilities = {n: float(p) for n, p in zip(names, mean)}
        pred.predicted_class = names[int(mean.argmax())]
        pred.target = column or encoder.target_name
    else:
        pred.value = float(f"{per_clip[:, 0].mean():.6g}")
        pred.value_std_over_clips = float(f"{per_clip[:, 0].std():.6g}")
        pred.target = encoder.target_name
    if keep_per_clip:
        pred.per_clip = per_clip.tolist()
    return pred
