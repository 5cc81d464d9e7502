"""What every section runner receives, and the guard that turns a failing case into a row."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from .env import DeviceInfo, error_text, free_memory, is_out_of_memory
from .results import ResultSink, Row
from .settings import SuiteSettings


@dataclass
class SuiteContext:
    settings: SuiteSettings
    info: DeviceInfo
    sink: ResultSink
    work_dir: str
    repo_root: str
    python: str
    seed: int = 0
    peak_tflops: Optional[float] = None
    peak_source: str = ""
    dry_run: bool = False
    log: Callable[[str], None] = print

    @property
    def device(self):
        return self.info.device

    def backends(self, wanted: Tuple[str, ...] = ("fused", "pure")):
        """(backend, reason-or-None) pairs: a reason means the backend's rows are not measured."""
        out = []
        for name in wanted:
            reason = self.info.fused_reason if name == "fused" else None
            out.append((name, reason))
        return out

    def add(self, **fields) -> Row:
        return self.sink.add(Row(**fields))

    def unavailable(self, reason: str, **fields) -> Row:
        """A row for a case that cannot run: 'skipped' without CUDA (dry-run), 'error' when CUDA
        is there but the fused kernels do not import (the install failed)."""
        status = "skipped" if reason.startswith("skipped") else "error"
        return self.add(status=status, note=reason, **fields)

    def guarded(self, fields: dict, body: Callable[[], None]) -> bool:
        """Run ``body``; on an exception add one 'error' row built from ``fields`` with the
        error text (out-of-memory named as such) and free the memory. True if it ran."""
        try:
            body()
            return True
        except Exception as err:  # every failure becomes a row; the suite goes on
            note = ("out of memory: " if is_out_of_memory(err) else "") + error_text(err)
            self.add(status="error", note=note, **fields)
            free_memory(self.device)
            return False
