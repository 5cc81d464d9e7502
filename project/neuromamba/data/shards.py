"""Shares of a preprocessing job list for a cluster job array.

``--shard I/N`` (1 <= I <= N) takes the runs whose (subject, run) hashes to share I. The share
is a property of the run alone (a CRC32 of its name), not of its position in a listing, so every
array task agrees on it even if it lists the input at another moment, and the N shares are
disjoint and cover every run. Under SLURM without ``--shard`` the array variables decide.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
# A shard's own report beside its runs: preprocess_report.shard-2-of-4.csv
REPORT_PATTERN = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)\.csv$")


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int
    source: str = "--shard"  # what chose it, for the start line

    def __post_init__(self):
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"{self.source}: shard {self.index}/{self.count} does not exist; "
                             f"shards are numbered 1/N to N/N")

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, subject: str, run: str) -> bool:
        return zlib.crc32(f"{subject}/{run}".encode()) % self.count == self.index - 1

    def select(self, jobs: Sequence) -> list:
        """The jobs (with ``.subject`` and ``.run``) of this share, in their given order."""
        return [job for job in jobs if self.owns(job.subject, job.run)]


def parse_shard(text: str) -> Shard:
    match = SHARD_PATTERN.match(text or "")
    if not match:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. --shard 3/10 (the third of ten "
                         f"shares)")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_from_slurm(env: Mapping[str, str]) -> Shard | None:
    """This array task's share, or None outside a SLURM job array. Works for any --array
    range with a step (0-99, 1-100, 0-198:2): the task's position in the range decides."""
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
    missing = [n for n in names if not env.get(n, "").strip().isdigit()]
    if missing:
        raise ValueError(f"SLURM_ARRAY_TASK_ID is set but {', '.join(missing)} is missing or "
                         f"not a number; pass --shard I/N explicitly")
    task, count, low = (int(env[n]) for n in names)
    step = int(env.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
    offset, rest = divmod(task - low, max(step, 1))
    if rest or offset < 0:
        raise ValueError(f"SLURM_ARRAY_TASK_ID {task} is not in the array {low}-...:{step}; pass "
                         f"--shard I/N explicitly")
    return Shard(offset + 1, count, source="SLURM_ARRAY_TASK_ID")


def resolve_shard(flag: str | None, env: Mapping[str, str]) -> Shard | None:
    """--shard wins; else the SLURM array; else None (every run)."""
    if flag is not None:
        return parse_shard(flag)
    return shard_from_slurm(env)


def report_name(report: str, shard: Shard | None) -> str:
    """``report`` (``stem.csv``), or ``stem.shard-I-of-N.csv`` for an array task, so array
    tasks never write one file together."""
    if shard is None:
        return report
    stem, suffix = report.rsplit(".", 1)
    return f"{stem}.{shard.file_tag}.{suffix}"


def parse_report_name(name: str):
    """(stem, shard) of a shard's report file name (:func:`report_name`), or None."""
    match = REPORT_PATTERN.match(name)
    if not match:
        return None
    try:
        return match["stem"], Shard(int(match["index"]), int(match["count"]), source=name)
    except ValueError:  # "shard-5-of-4": not a report this code wrote
        return None
