"""Encoder mode: one embedding per clip (pooled backbone features) and per subject (mean of
its clips), written as CSV, NPZ or Parquet for analyses outside the framework.

Table layout (every format): identifier columns (``subject``; per clip also ``run`` and
``start``, the clip's first frame; per subject ``num_clips``) then ``emb_0 … emb_{C-1}``. NPZ
stores the identifiers as string/integer arrays and the embeddings as one ``(n, C)`` array.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

from ..fileio import atomic_path
from .encoder import Encoder
from .reid import mean_by_key


def _pool_mean(out):
    from neuromamba.models.heads import mean_pool

    return mean_pool(out)


def _pool_last(out):
    from neuromamba.models.heads import last_token

    return last_token(out)


# How token features become one vector per clip.
POOLINGS: Dict[str, Callable] = {"mean": _pool_mean, "last": _pool_last}


@dataclass
class ClipEmbeddings:
    subjects: List[str]
    runs: List[str]
    starts: np.ndarray  # (n,) int64
    embeddings: np.ndarray  # (n, C) float32
    outputs: Optional[np.ndarray] = None  # (n, K) head predictions, if asked for
    extra: Dict[str, np.ndarray] = field(default_factory=dict)  # e.g. per-clip targets

    def __len__(self) -> int:
        return len(self.subjects)


@dataclass
class SubjectEmbeddings:
    subjects: List[str]
    num_clips: np.ndarray
    embeddings: np.ndarray


@torch.no_grad()
def extract_clip_embeddings(
    encoder: Encoder, batches: Iterable[dict], pooling: str = "mean", device: str = "cpu",
    with_outputs: bool = False, keep_targets: bool = True, clip_spec=None,
) -> ClipEmbeddings:
    """Pool the backbone features of every clip in ``batches`` (dicts with ``fmri``,
    ``subject``, ``run``, ``start`` and optionally ``target``). With ``clip_spec``, batches of
    clips as stored are scaled on ``device`` first (``datasets.batch_to_model``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}")
    pool = POOLINGS[pooling]
    encoder.use_per_sample_tokens()
    encoder.to(device)
    subjects, runs, starts, chunks, outputs, targets = [], [], [], [], [], []
    for batch in batches:
        if clip_spec is not None:
            from neuromamba.data.datasets import batch_to_model

            batch = batch_to_model(batch, clip_spec, device)
        x = batch["fmri"].to(device=device, dtype=torch.float32)
        mask = batch.get("brain_mask")
        out = encoder.backbone(x, mask)
        chunks.append(pool(out).float().cpu().numpy())
        if with_outputs and encoder.head is not None:
            outputs.append(encoder.predict(x, mask).cpu().numpy())
        subjects += [str(s) for s in batch["subject"]]
        runs += [str(r) for r in batch.get("run", [""] * x.shape[0])]
        starts.append(np.asarray(batch.get("start", torch.zeros(x.shape[0]))).reshape(-1))
        if keep_targets and "target" in batch:
            targets.append(np.asarray(batch["target"]).reshape(-1))
    if not chunks:
        raise ValueError("no clips to embed (the data selection is empty)")
    extra = {"target": np.concatenate(targets)} if targets and len(targets) == len(chunks) else {}
    return ClipEmbeddings(
        subjects, runs, np.concatenate(starts).astype(np.int64),
        np.concatenate(chunks).astype(np.float32),
        np.concatenate(outputs) if outputs else None, extra,
    )


def subject_embeddings(clips: ClipEmbeddings) -> SubjectEmbeddings:
    """Mean over each subject's clips (subjects in first-seen order)."""
    keys, means = mean_by_key(clips.embeddings, clips.subjects)
    counts = np.array([clips.subjects.count(k) for k in keys])
    return SubjectEmbeddings(list(keys), counts, means.astype(np.float32))


def run_embeddings(clips: ClipEmbeddings):
    """Mean over each (subject, run): the unit of re-identification."""
    keys, means = mean_by_key(clips.embeddings, list(zip(clips.subjects, clips.runs)))
    return [k[0] for k in keys], [k[1] for k in keys], means


# ------------------------------------------------------------------------------------------
# Writing: one registry keyed by file suffix
# ------------------------------------------------------------------------------------------
def _columns(ids: Dict[str, np.ndarray], embeddings: np.ndarray):
    import pandas as pd

    frame = pd.DataFrame({k: np.asarray(v) for k, v in ids.items()})
    emb = pd.DataFrame(embeddings, columns=[f"emb_{i}" for i in range(embeddings.shape[1])])
    return pd.concat([frame, emb], axis=1)


def _write_csv(path: str, ids, embeddings) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:  # pandas infers compression from it
        _columns(ids, embeddings).to_csv(tmp, index=False)


def _write_npz(path: str, ids, embeddings) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # a file object keeps numpy from appending ".npz"
        np.savez(f, embeddings=embeddings, **{k: np.asarray(v) for k, v in ids.items()})


def _write_parquet(path: str, ids, embeddings) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow); "
                         "use a .csv or .npz output instead") from None
    with atomic_path(path, keep_suffix=True) as tmp:
        _columns(ids, embeddings).to_parquet(tmp, index=False)


WRITERS = {".csv": _write_csv, ".npz": _write_npz, ".parquet": _write_parquet}


def write_embeddings(path: str, ids: Dict[str, np.ndarray], embeddings: np.ndarray) -> str:
    """Write a table of identifier columns + embeddings; the format follows the suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"{path}: unsupported output format {suffix!r}; use one of {sorted(WRITERS)}")
    WRITERS[suffix](path, ids, np.asarray(embeddings, dtype=np.float32))
    return path


def write_clip_embeddings(path: str, clips: ClipEmbeddings) -> str:
    ids = {"subject": np.array(clips.subjects), "run": np.array(clips.runs), "start": clips.starts}
    return write_embeddings(path, ids, clips.embeddings)


def write_subject_embeddings(path: str, subjects: SubjectEmbeddings) -> str:
    ids = {"subject": np.array(subjects.subjects), "num_clips": subjects.num_clips}
    return write_embeddings(path, ids, subjects.embeddings)


def read_embeddings(path: str):
    """Read a table written above -> (identifier DataFrame, ``(n, C)`` embeddings)."""
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if not Path(path).exists():
        raise FileNotFoundError(f"embedding file not found: {path}")
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            emb = data["embeddings"]
            ids = pd.DataFrame({k: data[k] for k in data.files if k != "embeddings"})
        return ids, emb
    if suffix == ".csv":
        frame = pd.read_csv(path, dtype={"subject": str, "run": str})
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: unsupported format {suffix!r}")
    emb_cols = [c for c in frame.columns if str(c).startswith("emb_")]
    return frame.drop(columns=emb_cols), frame[emb_cols].to_numpy(dtype=np.float32)
