"""Atomic file writes: a temporary name in the same folder, then ``os.replace``."""
from __future__ import annotations

import os
import tempfile
from pathlib import PurePath
from typing import Callable


def atomic_save(path: str, writer: Callable[[str], None]) -> None:
    """Run ``writer(tmp_path)`` then rename the result to ``path``. The temporary name keeps
    the final suffixes (``.nii.gz``, ``.parquet``) because some libraries choose the format
    from them."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = "".join(PurePath(path).suffixes)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_save(path, write)
