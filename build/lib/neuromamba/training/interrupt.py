"""Ctrl-C during training: one line saying where the run stopped and the exact flag to resume."""
from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl


class InterruptNotice(pl.Callback):
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            how = (f"resume with the same command plus --resume_ckpt_path {last} (it continues "
                   f"from the last finished epoch)")
        else:
            how = "no epoch had finished, so there is no checkpoint: rerun the same command"
        print(f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}; {how}",
              file=sys.stderr, flush=True)
