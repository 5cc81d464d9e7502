"""The work behind ``project/embed.py``: load, embed, write, then optional probes and re-id."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..fileio import atomic_write_text
from .clip_source import build_datamodule, clip_loader
from .embeddings import (
    extract_clip_embeddings,
    run_embeddings,
    subject_embeddings,
    write_clip_embeddings,
    write_subject_embeddings,
)
from .encoder import load_encoder
from .label_source import aligned_targets, dummy_label_frame, parse_target_specs, read_label_frame
from .probes import PROBE_COLUMNS, probe_table
from .reid import reidentification_metrics
from .tables import format_table

REID_COLUMNS = ["unit", "num_queries", "top1", "top5", "mAP", "chance_top1"]


def default_subject_output(output: str) -> str:
    path = Path(output)
    return str(path.with_name(path.stem + "_subjects" + path.suffix))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    return name


def run(args) -> Dict:
    encoder = load_encoder(args.checkpoint, img_size=args.img_size, patch_size=args.patch_size,
                           input_scaling_method=args.input_scaling_method,
                           allow_pickle=args.allow_pickle)
    from neuromamba.memory import plan_batch

    device = resolve_device(args.device)
    batch, line = plan_batch(encoder.model, "inference", args.batch_size, 4, device, "--batch_size")
    print(f"[neuromamba] {line}", file=sys.stderr, flush=True)
    args.batch_size = batch  # the datamodule reads it too
    datamodule = build_datamodule(args, encoder)
    loader = clip_loader(datamodule, args.split, batch, args.num_workers)
    encoder.check_grid(datamodule.grid.as_dict(), f"--dataset_name {args.dataset_name}")
    clips = extract_clip_embeddings(encoder, loader, pooling=args.pooling,
                                    device=device, clip_spec=datamodule.clip_spec)
    subjects = subject_embeddings(clips)
    written = [write_clip_embeddings(args.output, clips)]
    subject_path = args.subject_output or default_subject_output(args.output)
    written.append(write_subject_embeddings(subject_path, subjects))
    lines = [f"embedded {len(clips)} clips of {len(subjects.subjects)} subjects "
             f"({clips.embeddings.shape[1]} dims, {encoder.format} checkpoint)",
             *(f"wrote {p}" for p in written)]
    result: Dict = {"files": written, "num_clips": len(clips),
                    "num_subjects": len(subjects.subjects)}

    if args.probe_targets:
        rows = probe_rows(args, encoder.img_size, clips, subjects)
        result["probes"] = rows
        subjects_seen = len(set(clips.subjects))
        folds = min(args.probe_folds, subjects_seen)  # what probes._folds runs: one subject a fold at most
        clamp = (f"; --probe_folds {args.probe_folds} clamped to the {subjects_seen} subjects"
                 if folds < args.probe_folds else "")
        result["probe_folds"] = folds
        lines += ["", f"linear probes ({args.probe_level} level, {folds}-fold CV grouped by subject"
                  f"{clamp}):", format_table(rows, PROBE_COLUMNS)]
    if args.reid:
        runs_per_subject = {}
        for subject, run in zip(clips.subjects, clips.runs):
            runs_per_subject.setdefault(subject, set()).add(run)
        if max(len(r) for r in runs_per_subject.values()) < 2:
            result["reid"] = []
            lines += ["", "re-identification skipped: it needs at least two runs per subject "
                      "(a query must find its subject's other run), and every subject here has one"]
        else:
            rows = [reid_row(clips, args.reid_unit)]
            result["reid"] = rows
            lines += ["", "re-identification (cosine similarity; gallery excludes the query's own "
                      "run):", format_table(rows, REID_COLUMNS)]
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=float))
    result["text"] = "\n".join(lines)
    return result


def probe_rows(args, img_size, clips, subjects) -> List[Dict]:
    if args.label_csv:
        frame = read_label_frame(args.label_csv, args.subject_column)
    elif args.dataset_name == "Dummy":
        frame = dummy_label_frame(args, img_size)
    else:
        raise ValueError("--probe_targets needs --label_csv (a table with the target columns)")
    names, tasks = parse_target_specs(args.probe_targets)
    if args.probe_level == "subject":
        X, groups = subjects.embeddings, subjects.subjects
        targets = aligned_targets(frame, names, subjects.subjects)
    elif args.probe_level == "run":
        run_subjects, runs, X = run_embeddings(clips)
        groups = run_subjects
        targets = aligned_targets(frame, names, run_subjects, runs)
    else:
        X, groups = clips.embeddings, clips.subjects
        targets = aligned_targets(frame, names, clips.subjects, clips.runs)
    return probe_table(np.asarray(X), targets, groups, tasks, args.probe_folds, args.seed)


def reid_row(clips, unit: str) -> Dict:
    """Re-identification over run-mean embeddings (unit "run") or single clips (unit "clip";
    clips of the query's own run are still excluded from its gallery)."""
    if unit == "run":
        subj, runs, emb = run_embeddings(clips)
    else:
        subj, runs, emb = clips.subjects, clips.runs, clips.embeddings
    metrics = reidentification_metrics(emb, subj, runs)
    return {"unit": unit, **metrics}
