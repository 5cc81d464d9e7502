"""What a run's hardware settings ask of this machine, checked when a run starts (not when
flags parse: a dry run checks a GPU-cluster command on a laptop)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

# Variables a multi-node launcher sets in every process it starts.
LAUNCHER_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE")


def deepspeed_runs_on_cpu() -> bool:
    """Lightning's DeepSpeedStrategy refuses a CPU accelerator, so users get a clear line
    instead. The tests run DeepSpeed's real engine on its CPU accelerator through a test-only
    strategy (tests/training/deepspeed_cpu.py), which turns this on."""
    return False


def launcher_present() -> bool:
    return any(os.environ.get(name) for name in LAUNCHER_VARIABLES)


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def check_hardware(hardware) -> None:
    """Refuse what this machine cannot run (a ``run_config.Hardware``): a GPU that is not
    there, several nodes without a launcher, more CPU processes than cores; warn about bf16
    on a CPU without native bf16."""
    import torch

    wants_gpu = hardware.wants_gpu or (hardware.uses_deepspeed and not deepspeed_runs_on_cpu())
    if wants_gpu and not torch.cuda.is_available():
        what = (f"--strategy {hardware.strategy}" if hardware.uses_deepspeed
                else f"--accelerator {hardware.accelerator}")
        raise ValueError(f"{what} needs a CUDA GPU and this machine has none visible; use "
                         f"--accelerator cpu (and --strategy auto or ddp)")
    if hardware.num_nodes > 1 and not launcher_present():
        raise ValueError(f"--num_nodes {hardware.num_nodes} needs a multi-node launcher to start the "
                         f"other nodes' processes: SLURM (sbatch/srun), PBS (qsub, then mpiexec or "
                         f"pbsdsh) or torchrun --nnodes; none is present here "
                         f"({', '.join(LAUNCHER_VARIABLES)} unset). On one machine use --num_nodes 1")
    cores = os.cpu_count() or 1
    if hardware.runs_on_cpu and isinstance(hardware.devices, int) and hardware.devices > cores:
        raise ValueError(f"--devices {hardware.devices} on the CPU starts {hardware.devices} processes "
                         f"on {cores} cores; use --devices {cores} or fewer")
    if hardware.runs_on_cpu and hardware.precision in ("bf16", "bf16-mixed", "16", "16-mixed"):
        from neuromamba.console import NeuroMambaWarning

        native = cpu_has_native_bf16()
        warnings.warn(f"--precision {hardware.precision} on the CPU: " + (
            "this CPU has native bf16 (AMX/AVX512-BF16), so autocast can pay off" if native else
            "this CPU has no native bf16, and a training run was measured ~5x slower than with "
            "--precision 32 on the project's 2-core x86 machine; use --precision 32 here"),
            NeuroMambaWarning, stacklevel=2)
