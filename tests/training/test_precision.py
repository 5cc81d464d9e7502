"""--precision bf16 means fp32 weights (A_log, dt_bias, D, norms included) with bf16 autocast
under every strategy: the optimizer holds fp32, clips/targets/losses stay fp32, the matmuls run
in bf16. DeepSpeed gets no bf16 mode (its bf16 weights and input casting are what we avoid)."""
import pytest
import pytorch_lightning as pl
import torch

from neuromamba.cli import parse_args, run_config_of
from neuromamba.training.runner import run
from neuromamba.training.strategies import build_strategy, deepspeed_config

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--no_progress_bar", "--precision", "bf16"]


@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3",
                                      "deepspeed_stage_2_offload", "deepspeed_stage_3_offload"])
def test_deepspeed_bf16_is_fp32_weights_with_module_autocast(strategy):
    args = parse_args(TINY + ["--pretraining", "--accelerator", "gpu", "--strategy", strategy])
    assert args.lightning_precision == "32-true" and args.autocast_dtype == "bfloat16"
    config = deepspeed_config(int(strategy.split("_")[2]), args.lightning_precision)
    assert "bf16" not in config and "fp16" not in config
    pytest.importorskip("deepspeed")
    built = build_strategy(run_config_of(args).hardware)
    assert "bf16" not in built.config and "fp16" not in built.config


def test_ddp_bf16_is_lightnings_mixed_precision():
    args = parse_args(TINY + ["--pretraining", "--accelerator", "cpu", "--strategy", "ddp"])
    assert args.lightning_precision == "bf16-mixed" and args.autocast_dtype is None


class _Probe(pl.Callback):
    """Records what the optimizer holds, what the batch carries and what the layers compute in."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen["clip"] = batch["fmri"].dtype
        self.seen["target"] = batch["target"].clone()
        layer = module.model.mamba_layers[0][1]
        def record(mod, inp, out):
            self.seen.setdefault("matmul", out.dtype)  # returns None: the output is untouched

        self._hook = layer.out_proj.register_forward_hook(record)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._hook.remove()
        self.seen["loss"] = outputs["loss"].dtype
        self.seen["params"] = {p.dtype for group in trainer.optimizers[0].param_groups for p in group["params"]}
        trainer.should_stop = True


@pytest.mark.parametrize("deepspeed_path", [False, True])
def test_bf16_training_step_keeps_fp32_where_it_matters(tmp_path, deepspeed_path):
    args = parse_args(TINY + ["--accelerator", "cpu", "--downstream_task", "age", "--downstream_task_type",
                              "regression", "--dummy_num_subjects", "8", "--max_epochs", "1",
                              "--output_dir", str(tmp_path), "--run_name", f"r{int(deepspeed_path)}"])
    if deepspeed_path:  # what cli.finalize gives a DeepSpeed strategy, run here on one CPU
        args.lightning_precision, args.autocast_dtype = "32-true", "bfloat16"
    probe = _Probe()
    run(run_config_of(args), extra_callbacks=[probe])
    seen = probe.seen
    assert seen["params"] == {torch.float32}
    assert seen["clip"] == torch.float32 and seen["target"].dtype == torch.float32
    ages = seen["target"]
    # Rounded to bf16 on the way, every target would equal its own bf16 rounding.
    assert not torch.equal(ages, ages.to(torch.bfloat16).to(torch.float32))
    assert seen["loss"] == torch.float32
    assert seen["matmul"] == torch.bfloat16
