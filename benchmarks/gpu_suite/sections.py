"""The suite's sections, in run order: name -> runner(ctx). One registry, used by the CLI."""
from __future__ import annotations

from typing import Callable, Dict

from . import memory, mfu, parity, throughput, training_run
from .context import SuiteContext

# Seconds each section may take on an H100/H200 (the full settings): the suite skips a section
# that would overrun the call's --time_budget_s and stops one that overruns its own budget, so
# one slow section never costs the rest. They sum to 405 s; gpu_suite.sh gives the sections what
# the install left of its 530 s (NM_TOTAL_S), so the last ones go first when time is short.
BUDGETS_S: Dict[str, int] = {"parity": 60, "throughput": 90, "memory": 45, "training": 170,
                             "mfu": 40}

SECTIONS: Dict[str, Callable[[SuiteContext], None]] = {
    parity.SECTION: parity.run,            # (1) fused vs pure outputs and gradients
    throughput.SECTION: throughput.run,    # (2) fwd+bwd tokens/s, batch 1-4, with/without removal
    memory.SECTION: memory.run,            # (3) peak memory of a training step at batch 3
    training_run.SECTION: training_run.run,  # (4) main.py pretrain 50 steps, then fine-tune
    mfu.SECTION: mfu.run,                  # (5) model FLOP utilisation of the Base step
}
