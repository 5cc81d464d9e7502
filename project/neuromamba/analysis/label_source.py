"""Probe targets aligned with embedding rows, from a label CSV or the Dummy data's labels.

A CSV has a subject column (``--subject_column``) and one column per target; with a ``run``
column the labels are per run (task state) and are matched on (subject, run). Values are kept
as read (strings or numbers); the probe decides classification vs. regression.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from neuromamba.data.labels import RUN_COLUMN


def dummy_label_frame(args, img_size):
    """The Dummy dataset's planted labels as a table: subject, run, label, age."""
    import pandas as pd

    from neuromamba.data import dummy

    spec = dummy.DummySpec(
        num_subjects=args.dummy_num_subjects, img_size=tuple(img_size[:3]),
        num_frames=args.dummy_num_frames or dummy.default_num_frames(img_size[3]), num_runs=args.dummy_num_runs,
        seed=args.seed, label_level=args.dummy_label_level)
    classes, ages = dummy.class_labels(spec), dummy.regression_targets(spec)
    return pd.DataFrame([{"subject": s, "run": r, "label": c, "age": ages[(s, r)]}
                         for (s, r), c in classes.items()])


def read_label_frame(path: str, subject_column: str = "subject"):
    """The table with its subject column named ``subject`` (found as training finds it: the
    flag's column, else ``subject`` or BIDS's ``participant_id``); CSV or TSV."""
    import pandas as pd

    from neuromamba.data.labels import COHORTS, resolve_subject_column

    if not Path(path).exists():
        raise FileNotFoundError(f"--label_csv {path}: no such file")
    header = list(pd.read_csv(path, sep=None, engine="python", nrows=0).columns)
    column = resolve_subject_column(header, COHORTS["CSV"], subject_column, path)
    frame = pd.read_csv(path, sep=None, engine="python", dtype={column: str, RUN_COLUMN: str})
    return frame.rename(columns={column: "subject"})


def aligned_targets(frame, targets: Sequence[str], subjects: Sequence[str],
                    runs: Optional[Sequence[str]] = None) -> Dict[str, List]:
    """For each target, one value per row given by ``subjects`` (and ``runs`` for per-run
    labels); rows without a label get None."""
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        raise ValueError(f"probe target(s) {missing} not in the label table; columns are "
                         f"{[c for c in frame.columns if c not in ('subject', RUN_COLUMN)]}")
    per_run = runs is not None and RUN_COLUMN in frame.columns
    out = {}
    for target in targets:
        if per_run:
            lookup = {(str(s), str(r)): v for s, r, v in
                      zip(frame["subject"], frame[RUN_COLUMN], frame[target])}
            out[target] = [_clean(lookup.get((str(s), str(r)))) for s, r in zip(subjects, runs)]
        else:
            first = frame.drop_duplicates("subject")
            lookup = dict(zip(first["subject"].astype(str), first[target]))
            out[target] = [_clean(lookup.get(str(s))) for s in subjects]
    return out


def _clean(value):
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def parse_target_specs(specs: Sequence[str]) -> tuple:
    """``["sex", "age:regression"]`` -> (names, {name: task}). A named target without an
    explicit task gets main.py's (labels.DEFAULT_TASK_TYPES: age and intelligence are
    regression, sex classification); other columns are left to the probe's inference."""
    from neuromamba.data.labels import DEFAULT_TASK_TYPES

    names, tasks = [], {}
    for spec in specs:
        name, _, task = spec.partition(":")
        if not name:
            raise ValueError(f"--probe_targets: empty target name in {spec!r}")
        names.append(name)
        if task:
            tasks[name] = task
        elif name in DEFAULT_TASK_TYPES:
            tasks[name] = DEFAULT_TASK_TYPES[name]
    return names, tasks
