"""Label tables: per cohort (HCP/S1200, ABCD, UKB) and the generic CSV.

A label CSV has one row per subject (``subject,sex,age,...``), or, for task-state labels, rows
with a ``run`` column (label per run) and optionally ``start_frame``/``end_frame`` (label per
block of frames, end exclusive: a clip gets the label of the block that contains all of its
frames; clips that straddle blocks are left out). Classification labels (strings or numbers) are
mapped to class indices in sorted order; the mapping is kept in ``LabelTable.class_names``.
"""
from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..console import NeuroMambaWarning

TASK_TYPES = ("classification", "regression")
RUN_COLUMN = "run"
BLOCK_COLUMNS = ("start_frame", "end_frame")


@dataclass(frozen=True)
class CohortLabels:
    """How a cohort's label table names things. Candidates are tried in order."""

    subject_columns: tuple
    task_columns: Mapping[str, tuple]
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


_SEX_MF = {"m": "M", "male": "M", "f": "F", "female": "F"}
DEFAULT_TASK_TYPES = {"sex": "classification", "age": "regression", "intelligence": "regression"}
# Units of the named regression targets (plots and reports say them).
TARGET_UNITS = {"age": "years", "intelligence": "score points"}


MAX_CLASSES_FOR_AUTO = 10


def infer_task(values: Sequence) -> str:
    """Classification for non-numeric values or at most 10 distinct integers, else regression:
    the one rule for a column whose task nobody named (main.py's --target_column, embed's probes)."""
    arr = np.asarray(values, dtype=object)
    try:
        numeric = arr.astype(float)
    except (TypeError, ValueError):
        return "classification"
    distinct = np.unique(numeric[~np.isnan(numeric)])
    if len(distinct) <= MAX_CLASSES_FOR_AUTO and np.all(distinct == np.round(distinct)):
        return "classification"
    return "regression"


def default_task_type(target: str | None) -> str:
    """The task type of a named target (sex -> classification, age/intelligence -> regression;
    anything else classification): the one rule main.py and embed.py's probes share."""
    return DEFAULT_TASK_TYPES.get(str(target), "classification")

COHORTS = {
    "HCP": CohortLabels(
        subject_columns=("Subject", "subject"),
        task_columns={"sex": ("Gender", "sex", "Sex"),
                      "age": ("Age_in_Yrs", "age", "Age"),
                      "intelligence": ("CogTotalComp_AgeAdj", "PMAT24_A_CR", "intelligence")},
        value_maps={"sex": _SEX_MF}),
    "ABCD": CohortLabels(
        subject_columns=("subjectkey", "src_subject_id", "subject"),
        task_columns={"sex": ("sex", "Sex"),
                      "age": ("interview_age", "age"),
                      "intelligence": ("nihtbx_totalcomp_uncorrected",
                                       "nihtbx_fluidcomp_uncorrected", "intelligence")},
        value_maps={"sex": _SEX_MF}),
    "UKB": CohortLabels(
        subject_columns=("eid", "subject"),
        task_columns={"sex": ("31-0.0", "sex"),
                      "age": ("21003-2.0", "age"),
                      "intelligence": ("20016-2.0", "intelligence")},
        # UK Biobank field 31: 0 = female, 1 = male.
        value_maps={"sex": {"0": "F", "1": "M", "0.0": "F", "1.0": "M", **_SEX_MF}}),
    "CSV": CohortLabels(subject_columns=("subject",), task_columns={}),
}


@dataclass
class LabelTable:
    task_type: str
    targets: dict                      # (subject, run or None) -> value
    blocks: dict = field(default_factory=dict)  # (subject, run) -> [(start, end, value)]
    class_names: list | None = None    # class index -> original label
    column: str = ""

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    @property
    def subjects(self) -> set:
        return {s for s, _ in self.targets} | {s for s, _ in self.blocks}

    def target_for(self, subject: str, run: str, first_frame: int = 0, last_frame: int = 0):
        """The label of a clip (frames first..last inclusive), or None when it has none."""
        for start, end, value in self.blocks.get((subject, run), ()):
            if start <= first_frame and last_frame < end:
                return value
        if (subject, run) in self.targets:
            return self.targets[(subject, run)]
        return self.targets.get((subject, None))


def resolve_column(columns: Sequence[str], cohort: CohortLabels, downstream_task: str | None,
                   target_column: str | None, path) -> str:
    if target_column:
        if target_column not in columns:
            raise ValueError(f"--label_csv {path}: no column {target_column!r} "
                             f"(--target_column); columns are {list(columns)}")
        return target_column
    if not downstream_task:
        raise ValueError("a label needs --downstream_task or --target_column")
    for candidate in cohort.task_columns.get(downstream_task, ()) + (downstream_task,):
        if candidate in columns:
            return candidate
    raise ValueError(f"--label_csv {path}: no column for --downstream_task {downstream_task!r} "
                     f"(tried {list(cohort.task_columns.get(downstream_task, ())) + [downstream_task]}); "
                     f"pass --target_column; columns are {list(columns)}")


def resolve_subject_column(columns: Sequence[str], cohort: CohortLabels, subject_column: str | None,
                           path) -> str:
    # BIDS's participants.tsv names its subjects participant_id (sub-<label>, as preprocessing
    # names BIDS subjects)
    candidates = ((subject_column,) if subject_column and subject_column != "subject" else ()) + \
        cohort.subject_columns + ("subject", "participant_id")
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(f"--label_csv {path}: no subject column (tried {list(dict.fromkeys(candidates))};"
                     f" set --subject_column); columns are {list(columns)}")


# Spellings of a missing value in label tables (compared lower-case): the subject is reported
# as unlabelled and left out, never made a class of its own.
MISSING_SPELLINGS = ("", "nan", "na", "n/a", "none", "null", "-", "?", ".", "missing")


def is_missing(text) -> bool:
    return str(text).strip().lower() in MISSING_SPELLINGS


def canonical_class(text: str) -> str:
    """One spelling per class: numeric spellings of one value ('1', '1.0', '01') are one class,
    written as the integer when the value is whole ('1'); other labels stay as written."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not np.isfinite(value):
        return text
    return str(int(value)) if value.is_integer() else format(value, "g")


_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")
_PLUS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*\+\s*$")


def parse_number(text: str) -> float | None:
    """A regression value: plain numbers, or HCP age bins ('26-30' -> 28.0, '36+' -> 36.0)."""
    text = str(text).strip()
    if is_missing(text):
        return None
    try:
        value = float(text)
        return value if np.isfinite(value) else None
    except ValueError:
        pass
    if m := _RANGE.match(text):
        return (float(m.group(1)) + float(m.group(2))) / 2
    if m := _PLUS.match(text):
        return float(m.group(1))
    raise ValueError(f"cannot read {text!r} as a number")


def _sort_classes(values: Sequence[str]) -> list:
    unique = sorted(set(values))
    try:  # numeric labels sort numerically ('2' < '10')
        return sorted(unique, key=float)
    except ValueError:
        return unique


def read_label_frame(path: str | Path):
    """A label table as text cells (CSV or TSV: the delimiter is sniffed), with one readable
    error for a file that is not one."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python",
                            encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--label_csv {path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         f"save it as UTF-8 CSV") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, csv.Error) as err:
        raise ValueError(f"--label_csv {path}: not a readable CSV table "
                         f"({' '.join(str(err).split())})") from None
    if frame.empty:
        raise ValueError(f"--label_csv {path}: the table has a header but no rows")
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def load_label_table(path: str | Path, cohort_name: str = "CSV", downstream_task: str | None = None,
                     task_type: str | None = None, subject_column: str | None = "subject",
                     target_column: str | None = None) -> LabelTable:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--label_csv {path}: no such file")
    cohort = COHORTS.get(cohort_name, COHORTS["CSV"])
    frame = read_label_frame(path)
    subj_col = resolve_subject_column(list(frame.columns), cohort, subject_column, path)
    column = resolve_column(list(frame.columns), cohort, downstream_task, target_column, path)
    task_key = downstream_task or column
    task_type = task_type or DEFAULT_TASK_TYPES.get(task_key, "classification")
    if task_type not in TASK_TYPES:
        raise ValueError(f"--downstream_task_type {task_type!r}: choose one of {TASK_TYPES}")
    value_map = cohort.value_maps.get(task_key, {})

    raw, lines = {}, {}
    has_run = RUN_COLUMN in frame.columns
    has_blocks = has_run and all(c in frame.columns for c in BLOCK_COLUMNS)
    for row_number, row in enumerate(frame.to_dict("records"), start=2):
        text = str(row[column]).strip()
        if is_missing(text):
            continue  # missing label: the subject is reported and excluded later
        value = value_map.get(text.lower(), value_map.get(text, None))
        if value is None:
            value = canonical_class(text) if task_type == "classification" else text
        subject = str(row[subj_col]).strip()
        run = (str(row[RUN_COLUMN]).strip() or None) if has_run else None
        block = None
        if has_blocks and str(row[BLOCK_COLUMNS[0]]).strip() != "":
            block = (int(float(row[BLOCK_COLUMNS[0]])), int(float(row[BLOCK_COLUMNS[1]])))
        if task_type == "regression":
            try:
                value = parse_number(value)
            except ValueError as err:
                raise ValueError(f"--label_csv {path} line {row_number}: column {column!r}: {err}"
                                 f" (use --downstream_task_type classification for categories)")
            if value is None:
                continue
        key = (subject, run, block)
        if key in raw and str(raw[key]) != str(value):
            raise ValueError(f"--label_csv {path} line {row_number}: subject {subject!r}"
                             f"{' run ' + repr(run) if run else ''} is listed again with another "
                             f"{column!r} ({value!r}, earlier {raw[key]!r}); keep one row")
        raw.setdefault(key, value)
        lines.setdefault(key, row_number)

    for (subject, run, block), value in raw.items():  # a run's row must not contradict its subject's
        whole = raw.get((subject, None, None))
        if run is not None and whole is not None and str(whole) != str(value):
            raise ValueError(
                f"--label_csv {path} lines {lines[(subject, None, None)]} and "
                f"{lines[(subject, run, block)]}: subject {subject!r} has {column!r} {whole!r} for all "
                f"its runs and {value!r} for run {run!r}; keep one (a run label needs no subject row)")

    class_names = None
    if task_type == "classification":
        class_names = _sort_classes([str(v) for v in raw.values()])
        if len(class_names) < 2:
            raise ValueError(f"--label_csv {path}: column {column!r} has fewer than 2 classes")
        index = {name: i for i, name in enumerate(class_names)}
        raw = {k: index[str(v)] for k, v in raw.items()}

    targets, blocks = {}, {}
    for (subject, run, block), value in raw.items():
        if block is None:
            targets[(subject, run)] = value
        else:
            blocks.setdefault((subject, run), []).append((block[0], block[1], value))
    return LabelTable(task_type, targets, blocks, class_names, column)


def report_unlabelled(subjects: Sequence[str], table: LabelTable, what: str = "subjects") -> list:
    """Subjects with data but no label: one warning line, then they are excluded."""
    labelled = table.subjects
    missing = sorted(s for s in subjects if s not in labelled)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        table_ids = sorted(labelled)
        hint = ""
        if table_ids and len(missing) * 2 > len(subjects):  # most ids miss: show both spellings
            hint = (f"; the data's ids look like {missing[0]!r}, the table's like {table_ids[0]!r}"
                    + _prefix_hint(missing, table_ids))
        warnings.warn(f"{len(missing)} of {len(subjects)} {what} have no label in column "
                      f"{table.column!r} and are excluded: {shown}{hint}", NeuroMambaWarning, stacklevel=2)
    return missing


def _prefix_hint(data_ids: Sequence[str], table_ids: Sequence[str]) -> str:
    """' (a "sub-" prefix differs)' when adding or removing BIDS's sub- prefix would match."""
    table = set(table_ids)
    added = sum(f"sub-{s}" in table for s in data_ids)
    removed = sum(s.startswith("sub-") and s[4:] in table for s in data_ids)
    if max(added, removed) * 2 > len(data_ids):
        return " (a 'sub-' prefix differs: write the ids as the data names them)"
    return ""


def find_label_csv(image_path: str | Path) -> Path:
    """The original's layout keeps labels in metadata/*.csv next to (or in) the image folder."""
    image_path = Path(image_path)
    found = []
    for folder in (image_path / "metadata", image_path.parent / "metadata"):
        found += sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if len(found) != 1:
        raise ValueError(f"--label_csv is required: found {len(found)} CSV files in "
                         f"{image_path}/metadata or {image_path.parent}/metadata")
    return found[0]


def save_class_mapping(table: LabelTable, path: str | Path) -> None:
    import json

    from .. import fileio

    if table.class_names is None:
        return
    fileio.atomic_write_text(path, json.dumps(
        {"column": table.column, "classes": {str(n): i for i, n in enumerate(table.class_names)}},
        indent=2))
