"""What a folder of HDF5 runs holds, for ``preprocess.py check``: its runs, subjects and frames,
and, when it was written by a job array, whether every shard reported and which runs failed.

A shard's report lists the runs of its share with their status. A failed run counts only while
its file is still missing or bad: a later rerun (sharded or not) that fixed it supersedes the
old report's line.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .shards import parse_report_name



@dataclass
class ArrayReports:
    stem: str  # preprocess_report or legacy_report
    count: int  # N of the shards
    reported: list = field(default_factory=list)  # shard indices with a report
    failed: list = field(default_factory=list)  # (subject, run, message) still not good

    @property
    def missing(self) -> list:
        return [i for i in range(1, self.count + 1) if i not in self.reported]

    def line(self) -> str:
        head = f"job array ({self.stem}.shard-*-of-{self.count}.csv): {len(self.reported)} of {self.count} shards reported"
        if self.missing:
            shown = ", ".join(f"{i}/{self.count}" for i in self.missing[:10])
            more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
            head += f"; no report from shard {shown}{more} (not run yet, still running, or killed: rerun it)"
        if self.failed:
            head += f"; {len(self.failed)} run(s) failed and are still missing"
        return head


def array_reports(folder: str | Path, good: set) -> list:
    """One :class:`ArrayReports` per report stem and shard count found in ``folder``;
    ``good`` holds (subject, run) pairs whose file checked good."""
    groups = defaultdict(dict)
    for path in sorted(Path(folder).glob("*.shard-*-of-*.csv")):
        parsed = parse_report_name(path.name)
        if parsed:
            stem, shard = parsed
            groups[(stem, shard.count)][shard.index] = path
    found = []
    for (stem, count), reports in sorted(groups.items()):
        summary = ArrayReports(stem, count, sorted(reports))
        for path in reports.values():
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("status") == "failed" and (row["subject"], row["run"]) not in good:
                        summary.failed.append((row["subject"], row["run"], row.get("message", "")))
        found.append(summary)
    return found


def content_line(folder: str | Path, results: Sequence) -> str:
    """'6 subjects, 12 runs, 480 frames, 3.4 MiB' over the good runs."""
    good = [r for r in results if r.ok]
    subjects = {Path(r.path).relative_to(folder).parts[0] for r in good}
    size = sum(Path(r.path).stat().st_size for r in good)
    return (f"{len(subjects)} subjects, {len(good)} runs, {sum(r.frames for r in good)} frames, "
            f"{size / 2**20:.1f} MiB")


def good_runs(folder: str | Path, results: Sequence) -> set:
    """(subject, run) of every good file at {folder}/{subject}/{run}.h5."""
    pairs = set()
    for r in results:
        parts = Path(r.path).relative_to(folder).parts
        if r.ok and len(parts) == 2:
            pairs.add((parts[0], parts[1][: -len(".h5")]))
    return pairs
