"""The commands the docs show, found the way a reader finds them.

Sources: every fenced ``bash`` block (and unlabelled block whose lines start like a command) of
the docs in :data:`DOCS`, and the ``python project/...`` example lines of each entry script's
``--help``. A command is one logical line: ``\\``-continued lines joined, its trailing comment
kept apart. ``a && b`` is two commands.

Marks (written in the docs, where a reader sees them): a trailing comment, or a comment line
above a group of commands (up to the next blank line), that contains ``[GPU]``, ``[cluster]`` or ``[internet]`` says the command
cannot run as written on a CPU-only machine without network. The tests then check that it
parses (``main.py --dry_run`` at the doc's own sizes, ``bash -n`` for a script) instead of
running it.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]
# The docs site's pages (docs/*.md; a page that links a file above, like ARCHITECTURE.md, is read
# once under its own name) and the READMEs beside the code.
DOCS = ("README.md", "ADDING_YOUR_DATASET.md", "sample_scripts/README.md",
        "sample_scripts/lab_server_smoke_test/README.md", "benchmarks/README_data.md",
        "benchmarks/README_flops.md", "benchmarks/README_gpu.md", "benchmarks/README_mamba2.md",
        "benchmarks/README_learnability.md") + tuple(
    p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "docs").glob("*.md")) if not p.is_symlink())
HELP_SCRIPTS = ("main", "preprocess", "check_flops", "embed", "predict", "attribute", "baseline")
MARKS = ("GPU", "cluster", "internet")
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(python|bash|sbatch|qsub|pip|for |neuromamba|\.venv/|source )")


@dataclass
class DocCommand:
    source: str  # "README.md:41" or "predict.py --help"
    text: str  # the command as written (continuations joined)
    marks: Tuple[str, ...] = ()
    comment: str = ""
    block: int = 0  # commands of one block share an index (they run in order)

    @property
    def ident(self) -> str:
        words = re.sub(r"[^A-Za-z0-9_.]+", "_", self.text)[:60].strip("_")
        return f"{self.source}:{words}"

    def env_and_argv(self) -> Tuple[dict, List[str]]:
        """Leading ``NAME=value`` assignments, then the words."""
        words = shlex.split(self.text)
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        return env, words


def _marks(comment: str) -> Tuple[str, ...]:
    return tuple(m for m in MARKS if f"[{m}]" in comment)


def _split_comment(line: str) -> Tuple[str, str]:
    """``cmd  # note`` -> (cmd, note), a ``#`` inside quotes left alone."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands_in_text(text: str, source_name: str, first_line: int = 1, block: int = 0) -> List[DocCommand]:
    out: List[DocCommand] = []
    pending_marks: Tuple[str, ...] = ()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        start = i
        if not raw:  # a blank line ends a comment's marks
            pending_marks = ()
            i += 1
            continue
        if raw.startswith("#"):
            pending_marks = _marks(raw) or pending_marks
            i += 1
            continue
        parts, comments = [], []
        while True:
            body, comment = _split_comment(lines[i].strip())
            comments.append(comment)
            if body.endswith("\\"):
                parts.append(body[:-1].strip())
                i += 1
                continue
            parts.append(body)
            break
        i += 1
        joined = " ".join(p for p in parts if p)
        comment = " ".join(c for c in comments if c)
        marks = tuple(sorted(set(pending_marks) | set(_marks(comment))))
        if not COMMAND_START.match(joined):
            continue
        for piece in joined.split(" && "):
            out.append(DocCommand(f"{source_name}:{first_line + start}", piece.strip(), marks, comment, block))
    return out


def doc_commands() -> List[DocCommand]:
    found: List[DocCommand] = []
    block = 0
    for name in DOCS:
        path = ROOT / name
        text = path.read_text()
        for match in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
            lang, body = match.group(1), match.group(2)
            if lang not in ("bash", "sh", ""):
                continue
            block += 1
            line = text[:match.start()].count("\n") + 2
            found += commands_in_text(body, name, line, block)
    return found


def help_commands() -> List[DocCommand]:
    """The example lines of each entry script's ``--help``, optional ``[...]`` parts included."""
    import importlib

    from neuromamba.cli import build_parser

    found: List[DocCommand] = []
    for n, script in enumerate(HELP_SCRIPTS):
        if script == "main":
            parsers = [build_parser()]
        else:
            module = importlib.import_module(f"neuromamba.commands.{'flops' if script == 'check_flops' else script}")
            parsers = [module.build_parser()]
        text = "\n".join(p.format_help() for p in parsers)
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped.startswith("python project/"):
                continue
            body, comment = _split_comment(stripped)
            body = re.sub(r"\s+", " ", re.sub(r"\[([^\]]*)\]", r"\1", body))
            found.append(DocCommand(f"{script}.py --help", body, _marks(comment), comment, 1000 + n))
    return found


@dataclass
class Outcome:
    returncode: int
    output: str = ""
    notes: List[str] = field(default_factory=list)
