"""Result rows and the three files the suite writes: Markdown table, CSV and JSON.

Every measurement, check, skip or failure is one :class:`Row`; the files are rewritten
(atomically) after each row, so a run killed at its time limit still leaves what it measured.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

COLUMNS = ("section", "case", "backend", "precision", "batch", "metric", "value", "unit",
           "limit", "status", "note")

# pass/fail: a check against `limit`; ok: a measurement without a limit; error: the case raised;
# skipped: the case could not run here (e.g. fused rows without CUDA).
STATUSES = ("pass", "fail", "ok", "error", "skipped")

MARKDOWN_NOTE_CHARS = 160


@dataclass
class Row:
    section: str
    case: str
    metric: str
    value: Optional[float] = None
    unit: str = ""
    backend: str = ""
    precision: str = ""
    batch: Optional[int] = None
    limit: str = ""
    status: str = "ok"
    note: str = ""
    extra: Dict = field(default_factory=dict)  # JSON only: structured details

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"row status {self.status!r} is not one of {STATUSES}")


def checked(value: float, limit: float, below: bool = True) -> str:
    """'pass' when ``value`` is finite and below (or above) ``limit``, else 'fail'."""
    if value is None or not math.isfinite(value):
        return "fail"
    return "pass" if (value <= limit if below else value >= limit) else "fail"


def format_value(value) -> str:
    """Markdown cell for a number: 4 significant digits, '' for None, 'nan'/'inf' spelled out."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _markdown_cell(text: str) -> str:
    text = " ".join(str(text).split())  # newlines and runs of spaces -> one space
    return text.replace("|", "\\|")


def _cells(row: Row, note_chars: Optional[int]) -> List[str]:
    note = row.note if note_chars is None or len(row.note) <= note_chars else row.note[: note_chars - 3] + "..."
    values = {**{c: getattr(row, c) for c in COLUMNS}, "note": note}
    return [format_value(values[c]) if c in ("value", "batch") else str(values[c]) for c in COLUMNS]


def markdown_table(rows: Sequence[Row], note_chars: Optional[int] = MARKDOWN_NOTE_CHARS) -> str:
    """One pipe table, a row per :class:`Row`, columns :data:`COLUMNS`; long notes shortened."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(c) for c in _cells(row, note_chars)) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Row]) -> str:
    """CSV with a header; numbers written in full precision, notes in full."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if getattr(row, c) is None else
                         (repr(getattr(row, c)) if isinstance(getattr(row, c), float) else getattr(row, c))
                         for c in COLUMNS])
    return buf.getvalue()


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def json_text(rows: Sequence[Row], meta: Dict) -> str:
    return json.dumps(_json_safe({"meta": meta, "rows": [asdict(r) for r in rows]}),
                      indent=1, sort_keys=False) + "\n"


def load_json(path: str):
    """(rows, meta) of a ``results.json`` this module wrote."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: not a gpu_suite results.json (no 'rows' list)")
    fields = set(Row.__dataclass_fields__)
    rows = []
    for i, item in enumerate(data["rows"]):
        unknown = set(item) - fields
        if unknown:
            raise ValueError(f"{path}: row {i} has unknown fields {sorted(unknown)}")
        if isinstance(item.get("value"), str):  # "inf"/"-inf" as json_text wrote them (NaN: null)
            item["value"] = float(item["value"])
        rows.append(Row(**item))
    return rows, data.get("meta", {})


def merge_results(json_paths, out_dir: str) -> List[Row]:
    """One table from several calls' ``results.json`` (e.g. one device call per section), in
    the given order; the header lists each source's meta."""
    rows: List[Row] = []
    meta: Dict = {}
    for i, path in enumerate(json_paths, 1):
        part_rows, part_meta = load_json(path)
        rows.extend(part_rows)
        meta[f"part {i}"] = f"{path}: " + "; ".join(f"{k}={v}" for k, v in part_meta.items())
    sink = ResultSink(out_dir, meta)
    sink.rows = rows
    sink.flush()
    return rows


def summary_counts(rows: Sequence[Row]) -> Dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for row in rows:
        counts[row.status] += 1
    return counts


def markdown_document(rows: Sequence[Row], meta: Dict) -> str:
    counts = summary_counts(rows)
    lines = ["# NeuroMamba GPU suite results", ""]
    for key, value in meta.items():
        lines.append(f"- {key}: {value}")
    lines.append("- rows: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    lines += ["", markdown_table(rows)]
    return "\n".join(lines)


class ResultSink:
    """Collects rows and keeps ``results.md``, ``results.csv`` and ``results.json`` in
    ``out_dir`` up to date after every row."""

    FILES = {"markdown": "results.md", "csv": "results.csv", "json": "results.json"}

    def __init__(self, out_dir: str, meta: Dict, echo=None):
        self.out_dir = out_dir
        self.meta = dict(meta)
        self.rows: List[Row] = []
        self.echo = echo  # callable(str) for a one-line progress message per row, or None

    def path(self, kind: str) -> str:
        return os.path.join(self.out_dir, self.FILES[kind])

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        if self.echo is not None:
            self.echo(" | ".join(_markdown_cell(c) for c in _cells(row, 200)))
        self.flush()
        return row

    def flush(self) -> None:
        # Imported here: the suite puts project/ on sys.path only once its CLI starts.
        from neuromamba.fileio import atomic_write_text

        atomic_write_text(self.path("markdown"), markdown_document(self.rows, self.meta))
        atomic_write_text(self.path("csv"), csv_text(self.rows))
        atomic_write_text(self.path("json"), json_text(self.rows, self.meta))
