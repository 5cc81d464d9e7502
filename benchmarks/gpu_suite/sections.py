"""The suite's sections, in run order: name -> runner(ctx). One registry, used by the CLI."""
from __future__ import annotations

from typing import Callable, Dict

from . import memory, mfu, parity, throughput, training_run
from .context import SuiteContext

SECTIONS: Dict[str, Callable[[SuiteContext], None]] = {
    parity.SECTION: parity.run,            # (1) fused vs pure outputs and gradients
    throughput.SECTION: throughput.run,    # (2) fwd+bwd tokens/s, batch 1-4, with/without removal
    memory.SECTION: memory.run,            # (3) peak memory of a training step at batch 3
    training_run.SECTION: training_run.run,  # (4) main.py pretrain 50 steps, then fine-tune
    mfu.SECTION: mfu.run,                  # (5) model FLOP utilisation of the Base step
}
