"""Lightning's DeepSpeedStrategy with DeepSpeed's real engine on the CPU, for tests only.

DeepSpeed runs its ZeRO engine on its CPU accelerator (``DS_ACCELERATOR=cpu``) with gloo: stage
1, 2 and 3 train, step and save their checkpoint folders as on GPUs. Lightning insists on CUDA
in three places, each stepped around below with the line it steps around; the project's own
refusal of DeepSpeed on CPU (``machine.deepspeed_runs_on_cpu``) is turned off the same way.
Nothing here is used by the package: users get DeepSpeed on GPUs only.

Run ``python tests/training/deepspeed_cpu.py <main.py flags>``: main.py with these shims (each
DDP rank Lightning starts reruns this script, so the ranks get them too). With
``NEUROMAMBA_TEST_ENGINE_WEIGHTS=FILE`` set, rank 0 also saves the engine's weights (ZeRO-3's
shards gathered) at the end of training, to compare with what the checkpoint folder holds.
"""
import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is first imported

import torch  # noqa: E402
from pytorch_lightning.strategies import DDPStrategy  # noqa: E402

from neuromamba.training import strategies  # noqa: E402


class CPUDeepSpeedStrategy(strategies._deepspeed_strategy_class()):
    """The project's DeepSpeedStrategy, its processes computing on the CPU (gloo between them)."""

    def setup_environment(self) -> None:
        # Steps around DeepSpeedStrategy.setup_environment's
        # `if not isinstance(self.accelerator, CUDAAccelerator): raise RuntimeError(...)`.
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # Steps around `_validate_device_index_selection(self.parallel_devices)`: CPU devices
        # carry no index, so [None, None] never equals the expected [0, 1].
        from lightning_fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        # Steps around `deepspeed.initialize(args=Namespace(device_rank=self.root_device.index))`:
        # the engine compares `device_rank >= 0`, and a CPU device's index is None.
        return torch.device("cpu", 0)

    def _get_process_group_backend(self) -> str:
        return "gloo"


class SaveEngineWeights:
    """At the end of training, the module's parameters as the engine holds them, gathered."""

    def __init__(self, path: str):
        self.path = path

    def callback(self):
        from pytorch_lightning import Callback

        outer = self

        class _Save(Callback):
            def on_train_end(self, trainer, pl_module):
                import deepspeed

                params = list(pl_module.parameters())
                with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                    if trainer.is_global_zero:
                        torch.save({name: p.detach().clone() for name, p in pl_module.named_parameters()},
                                   outer.path)
        return _Save()


def install() -> None:
    """main.py's deepspeed_stage_* strategies built as CPUDeepSpeedStrategy."""
    from functools import partial

    from neuromamba import machine

    for name, builder in list(strategies.STRATEGY_BUILDERS.items()):
        if name.startswith("deepspeed_stage_"):
            strategies.STRATEGY_BUILDERS[name] = partial(builder, strategy_class=CPUDeepSpeedStrategy)
    machine.deepspeed_runs_on_cpu = lambda: True
    dump = os.environ.get("NEUROMAMBA_TEST_ENGINE_WEIGHTS")
    if dump:
        from neuromamba.training import runner

        plain_run = runner.run
        runner.run = lambda run, extra_callbacks=(): plain_run(
            run, tuple(extra_callbacks) + (SaveEngineWeights(dump).callback(),))


if __name__ == "__main__":
    install()
    from neuromamba.commands.train import run

    sys.exit(run())
