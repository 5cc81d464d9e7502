"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

A reader never sees a half-written file: the final name appears only once the content is
complete, and a writer that fails removes its temporary. A writer that is killed leaves
``<name>.tmp-<pid>-<token>[suffixes]`` behind; ``TMP_MARKER`` is how the data checker
(data/check.py) and ``data.store.remove_stale_temporaries`` recognise such leftovers.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator, Union

TMP_MARKER = ".tmp-"

PathLike = Union[str, os.PathLike]


def temporary_name(path: PathLike, keep_suffix: bool = False) -> Path:
    """A fresh temporary name next to ``path``. ``keep_suffix`` repeats the final suffixes
    (``.nii.gz``) at the end, for libraries that choose the format from the file name."""
    path = Path(path)
    name = f"{path.name}{TMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    if keep_suffix:
        name += "".join(path.suffixes)
    return path.with_name(name)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (created if missing); when the block ends
    without an exception the temporary is renamed to ``path``, otherwise it is removed and
    ``path`` is left as it was. The temporary is not created: the caller's writer does that
    (h5py, ``torch.save`` and ``nibabel`` want a path, not an open file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        # After a successful replace the temporary no longer exists; otherwise clean it up.
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: PathLike) -> Iterator[bool]:
    """Try to take an exclusive, non-blocking lock on ``path`` (created if missing); yields
    whether this process got it. The lock dies with the process (flock), so a killed holder
    never leaves it taken. The lock file itself is left in place on purpose: removing it would
    let two processes lock two different files of the same name."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    """Flush a written file's data to the disk (before the rename that publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, newline: str | None = None) -> Path:
    """UTF-8 text; ``newline`` as in ``open`` (``""`` keeps csv's ``\\r\\n`` untranslated)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as fh:
            fh.write(text)
    return Path(path)


def read_yaml_mapping(path: str, flag: str) -> dict:
    """The mapping in a YAML file (empty file: {}); a missing file, invalid YAML or another
    top-level type raises one readable error naming ``flag``."""
    import yaml

    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: file not found")
    try:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{flag} {path}: not valid YAML ({detail})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{flag} {path}: expected a mapping of names to values")
    return loaded
