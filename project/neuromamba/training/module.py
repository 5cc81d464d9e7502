"""The LightningModule: autoregressive pretraining, classification and regression fine-tuning.

Attributes ``self.model`` (the FMamba backbone) and ``self.head`` give checkpoint keys
``model.<backbone key>`` and ``head.<key>`` (contract D). Hyper-parameters are a plain dict of
primitives, so checkpoints load with ``torch.load(weights_only=True)``.

Modes: scratch; full fine-tuning (``load_model_path``); frozen backbone
(``freeze_feature_extractor``: backbone kept in eval mode, run without autograd, left out of
the optimizer); prompt tuning (``prompt_tuning``: frozen backbone, a learnable (K, C) prompt
prepended to every sequence, only prompt + head trained).
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from neuromamba.checkpoints import load_pretrained, torch_load_file
from neuromamba.models.fmamba import FMamba
from neuromamba.models.heads import AUTO_HEAD, auto_candidates, build_head_for
from neuromamba.paper import CHUNK_SIZE
from neuromamba.spec import spec_from_config
from neuromamba.training.metrics import (ClipRecords, aggregate_by_subject, classification_metrics,
                                         gather_records, mean_clip_loss, regression_metrics)
from neuromamba.training.head_selection import describe, epoch_record, head_choice
from neuromamba.training.schedule import CosineAnnealingWarmUpRestarts, build_optimizer

TASKS = ("pretraining", "classification", "regression")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; a checkpoint of that state was saved first."""


@dataclass(frozen=True)
class ModuleOptions:
    """What the LightningModule reads of a run's config besides its spec, typed, with each
    default in one place (a checkpoint written before a key existed gets it). The config dict
    itself stays the module's hyper-parameter, so every checkpoint reads back."""

    task: str
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.01
    cycle: float = 1.0
    gamma: float = 1.0
    label_smoothing: float = 0.0
    drop_rate: float = 0.0
    chunk_size: int = CHUNK_SIZE
    grad_checkpointing: bool = False
    autocast_dtype: Optional[str] = None
    seed: int = 0
    eval_level: str = "subject"
    eval_background_removal: Optional[str] = None
    load_model_path: Optional[str] = None
    allow_pickle: bool = False
    freeze_feature_extractor: bool = False
    prompt_tuning: bool = False
    prompt_len: int = 8

    @classmethod
    def from_config(cls, config: dict) -> "ModuleOptions":
        names = {f.name for f in dataclass_fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names and v is not None or k == "task"})


def build_backbone(spec, options: ModuleOptions) -> FMamba:
    """The backbone of a run's spec (``FMamba.from_spec``), with its numerical knobs."""
    return FMamba.from_spec(spec.model, background_value=spec.background_value,
                            drop_rate=options.drop_rate, pretraining=options.task == "pretraining",
                            chunk_size=options.chunk_size, grad_checkpointing=options.grad_checkpointing)


class NeuroMambaModule(pl.LightningModule):
    def __init__(self, config: dict, num_classes: Optional[int] = None, target_mean: float = 0.0,
                 target_std: float = 1.0, load_pretrained_weights: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.config = config  # the stored record; what the module reads is below, typed, once
        self.spec = spec_from_config(config)
        self.options = options = ModuleOptions.from_config(config)
        self.task = options.task
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {TASKS}")

        self.model = build_backbone(self.spec, options)
        if options.load_model_path and load_pretrained_weights:
            report = load_pretrained(self.model, options.load_model_path, allow_pickle=options.allow_pickle)
            rank_zero_info(f"loaded {len(report.loaded)} backbone tensors from {report.path} "
                           f"({report.format}); dropped {report.dropped or 'nothing'}")

        self.frozen_backbone = bool(options.freeze_feature_extractor or options.prompt_tuning)
        if self.frozen_backbone:
            self.model.requires_grad_(False)
            self.model.eval()

        self.prompt = None
        if options.prompt_tuning:
            self.prompt = nn.Parameter(torch.randn(options.prompt_len, self.spec.model.embed_dim) * 0.02)
            self.prompt._no_weight_decay = True

        self.head = None
        # --clf_head_version auto: every candidate trained on the same frozen features until
        # the test picks the one the best checkpoint's validation epoch leads with.
        self.head_candidates = None
        self.head_history: list = []  # one training/head_selection.epoch_record per validation
        if self.task != "pretraining":
            num_outputs = 1 if self.task == "regression" else int(num_classes or 0)
            if num_outputs < 1:
                raise ValueError("classification needs num_classes >= 2 from the data module")
            context = self.spec.head_context(num_outputs, options.chunk_size)
            if self.spec.model.clf_head_version == AUTO_HEAD:
                self.head_candidates = nn.ModuleDict({name: build_head_for(name, context)
                                                      for name in auto_candidates(context)})
            else:
                self.head = build_head_for(self.spec.model.clf_head_version, context)

        # Regression targets are standardised with train-split statistics; keeping them as
        # buffers puts them in every checkpoint, so predictions map back to original units.
        self.register_buffer("target_mean", torch.tensor(float(target_mean), dtype=torch.float64))
        self.register_buffer("target_std", torch.tensor(float(target_std), dtype=torch.float64))

        self._records = {"val": ClipRecords(), "test": ClipRecords()}
        self._candidate_records = {"val": {}, "test": {}}
        self._batch_started = None
        self._first_epoch_of_fit = True
        self._kept_tokens = 0
        self.test_table = None
        self.test_metrics: dict = {}

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_run(cls, run, num_classes: Optional[int] = None, target_mean: float = 0.0,
                target_std: float = 1.0) -> "NeuroMambaModule":
        """The module of a resolved run (a run_config.RunConfig). Its record is the module's
        one hyper-parameter, so every checkpoint rebuilds the module by itself (and the
        checkpoints written before this class existed still do)."""
        return cls(dict(run.record), num_classes=num_classes, target_mean=target_mean, target_std=target_std)

    @classmethod
    def from_checkpoint(cls, path: str, allow_pickle: bool = False, **overrides) -> "NeuroMambaModule":
        """Rebuild from one of this project's checkpoints (hyper-parameters + weights), a file
        or a DeepSpeed checkpoint folder (``allow_pickle``), without re-reading the pretrained
        backbone the run started from."""
        if Path(path).is_dir():
            from neuromamba.checkpoints import read_deepspeed_as_lightning

            ckpt = read_deepspeed_as_lightning(path, allow_pickle)
        else:
            ckpt = torch_load_file(path)
        if not (isinstance(ckpt, dict) and "hyper_parameters" in ckpt and "state_dict" in ckpt):
            raise ValueError(f"{path}: not a checkpoint written by project/main.py "
                             "(no hyper_parameters/state_dict)")
        hp = dict(ckpt["hyper_parameters"])
        hp["config"] = {**hp["config"], **overrides}
        hp["load_pretrained_weights"] = False
        module = cls(**hp)
        module.head_history = list(ckpt.get("head_history") or [])
        state = {k.replace("_forward_module.", "", 1): v for k, v in ckpt["state_dict"].items()}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as error:  # the stored settings do not describe the stored weights
            first = [line.strip() for line in str(error).splitlines() if "size mismatch" in line
                     or "Missing key" in line or "Unexpected key" in line][:1]
            raise ValueError(f"{path}: its stored settings do not match its weights "
                             f"({first[0] if first else type(error).__name__}); was the "
                             f"checkpoint edited?") from None
        if module.selecting_head:
            module.keep_chosen_head(str(path))
        return module

    # ------------------------------------------------------------------ --clf_head_version auto
    @property
    def selecting_head(self) -> bool:
        """Candidates are still being trained (no head kept yet)."""
        return self.head_candidates is not None and self.head is None

    @property
    def head_choice(self) -> Optional[dict]:
        """The head kept and every candidate's validation figures (None unless auto)."""
        return head_choice(self.head_history) if self.spec.model.clf_head_version == AUTO_HEAD else None

    def keep_chosen_head(self, where: str = "the run") -> str:
        """Keep the leading candidate of the last recorded validation epoch (the loaded
        checkpoint's own); the others are dropped. Returns the line that says so."""
        choice = head_choice(self.head_history)
        if choice is None:
            raise ValueError(f"--clf_head_version auto: {where} has no validation epoch to choose a "
                             f"head on; give the run a validation split (--val_split > 0)")
        self.head = self.head_candidates[choice["chosen"]]
        self.head_candidates = None
        return describe(choice)

    def target_stats(self) -> tuple[float, float]:
        return float(self.target_mean), float(self.target_std)

    def summary_line(self) -> str:
        """The model in one line, with the project's own analytic FLOPs count."""
        from neuromamba.models.flops import FMambaFlopsConfig, fmamba_forward_flops

        spec = self.spec
        model = spec.model
        kept = (self.head_choice or {}).get("chosen")  # auto: the head the run kept
        head = None if self.task == "pretraining" else kept or model.clf_head_version
        outputs = 1 if self.task == "regression" else int(self.hparams.get("num_classes") or 2)
        if self.selecting_head:  # every candidate runs on each step: name them
            head = f"auto: candidate heads {', '.join(self.head_candidates)} on one frozen backbone pass"
            flops = "FLOPs per head: check_flops.py --clf_head_version NAME"
        else:
            try:
                cfg = FMambaFlopsConfig(embed_dim=model.embed_dim, depth=model.depth, d_state=model.d_state,
                                        headdim=model.headdim, img_size=model.img_size,
                                        patch_size=model.patch_size, chunk_size=self.options.chunk_size,
                                        pretraining=head is None, head=head, num_outputs=outputs,
                                        static_time_tokens=spec.static_time_tokens)
                flops = f"{sum(fmamba_forward_flops(cfg).values()) / 1e9:.3g} GFLOPs forward per clip " \
                        f"at all {cfg.num_tokens:,} tokens"
            except NotImplementedError:  # a head that does not count its own FLOPs
                flops = "FLOPs: see check_flops.py"
        total = sum(p.numel() for p in self.parameters())
        return (f"model: FMamba C={model.embed_dim} depth={model.depth} d_state={model.d_state} "
                f"headdim={model.headdim}, {self.task} ({head or 'output layer'}); {total:,} "
                f"parameters; {flops}")

    def trainable_fraction(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_backbone:
            self.model.eval()  # frozen: no dropout, and the backbone never sees train mode
        return self

    def on_fit_start(self) -> None:
        self._first_epoch_of_fit = True
        trainable, total = self.trainable_fraction()
        fraction = trainable / max(total, 1)
        rank_zero_info(self.summary_line())
        rank_zero_info(f"trainable parameters: {trainable:,} of {total:,} ({100 * fraction:.2f}%)")
        if not self.trainer.ckpt_path:  # once per history, not again on resume
            for logger in self.loggers:
                logger.log_metrics({"trainable_params": trainable, "trainable_param_fraction": fraction}, step=0)

    # ------------------------------------------------------------------ forward
    def backbone(self, x: torch.Tensor, brain_mask: Optional[torch.Tensor] = None,
                 background_removal: Optional[str] = None):
        kwargs = dict(brain_mask=brain_mask, background_removal=background_removal)
        if self.prompt is not None:
            return self.model(x, prompt=self.prompt, **kwargs)
        if self.frozen_backbone:
            with torch.no_grad():
                return self.model(x, **kwargs)
        return self.model(x, **kwargs)

    def forward(self, x: torch.Tensor, brain_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Head outputs: class logits (B, K) or standardised regression values (B, 1), each clip
        computed on its own (per-sample background masks, as in evaluation)."""
        if self.head is None:
            raise RuntimeError("a pretraining module has no head; use model.next_token_loss")
        return self.head(self.backbone(x, brain_mask, self.eval_background_removal))

    @property
    def eval_background_removal(self) -> str:
        """Evaluation computes each clip independently of its batch-mates: per-sample
        (``packed``) masks unless ``--eval_background_removal batch`` asks for the original
        batch-wide rule."""
        if self.spec.model.background_removal == "none":
            return "none"
        return self.options.eval_background_removal or "packed"

    def _autocast(self):
        """bf16 autocast when the run asks for it itself (--precision bf16 under DeepSpeed; see
        cli.finalize); weights, inputs, targets and losses stay fp32."""
        dtype = self.options.autocast_dtype
        if not dtype:  # never autocast(enabled=False): it would switch off Lightning's own
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))

    def _step(self, batch, stage: str = "train"):
        """(per-clip or scalar loss, per-clip outputs for metrics, kept tokens, all tokens)."""
        removal = None if stage == "train" else self.eval_background_removal
        with self._autocast():
            return self._step_body(batch, removal, per_clip=stage != "train")

    def _step_body(self, batch, removal, per_clip: bool = False):
        out = self.backbone(batch["fmri"], batch.get("brain_mask"), removal)
        kept = int(out.lengths.sum())
        total = out.num_tokens_total * out.batch_size
        if self.task == "pretraining":
            # Training optimises the token mean of the batch; evaluation keeps each clip's own.
            loss = self.model.next_token_loss_per_sample(out) if per_clip else self.model.next_token_loss(out)
            return loss, None, kept, total
        if self.selecting_head:
            pairs = {name: self._head_losses(head(out).float(), batch["target"])
                     for name, head in self.head_candidates.items()}
            return ({n: p[0] for n, p in pairs.items()}, {n: p[1] for n, p in pairs.items()}, kept, total)
        losses, outputs = self._head_losses(self.head(out).float(), batch["target"])
        return losses, outputs, kept, total

    def _head_losses(self, result: torch.Tensor, target: torch.Tensor):
        """(per-clip losses, per-clip outputs for the metrics) of one head's result."""
        if self.task == "classification":
            losses = F.cross_entropy(result, target.long(), reduction="none",
                                     label_smoothing=self.options.label_smoothing)
            return losses, torch.softmax(result, dim=-1)
        target_std = self._standardise(target)
        losses = F.mse_loss(result.squeeze(-1), target_std, reduction="none")
        return losses, result

    def _standardise(self, target: torch.Tensor) -> torch.Tensor:
        mean, std = self.target_stats()
        return ((target.double() - mean) / std).float()

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        loss, _, kept, total = self._step(batch)
        batch_size = batch["fmri"].shape[0]
        if isinstance(loss, dict):  # auto: the candidates' parameters are disjoint, so the sum
            # gives each head its own gradient; the logged loss is their mean
            means = {name: value.mean() for name, value in loss.items()}
            for name, value in means.items():
                self.log(f"train/{name}/loss", value.detach(), on_step=False, on_epoch=True,
                         batch_size=batch_size)
            loss = torch.stack(list(means.values())).sum()
            shown = loss.detach() / len(means)
        else:
            loss = loss.mean()
            shown = loss.detach()
        self._check_finite(loss)
        self._kept_tokens = kept
        self.log("train/loss", shown, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        self.log("kept%", 100.0 * kept / max(total, 1), on_step=True, prog_bar=True, batch_size=batch_size)
        return loss

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=loss.device)
        if self.trainer.world_size > 1:  # every rank must stop together (saving is collective)
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if float(bad) > 0:
            path = Path(self.trainer.default_root_dir) / "checkpoints" / f"nonfinite-step{self.global_step}.ckpt"
            self.trainer.save_checkpoint(str(path))
            raise NonFiniteLossError(
                f"training loss is {float(loss.detach())} at step {self.global_step} (epoch {self.current_epoch}); "
                f"the state was saved to {path}. Lower --learning_rate, set --clip_grad_norm, "
                "or check the inputs for NaN")

    def on_train_epoch_start(self) -> None:
        # A shuffling loader with its own generator would replay epoch 0's order after a resume;
        # keying the generator by (seed, epoch) makes every epoch's order reproducible. The
        # DataLoader draws one base seed from this generator when its iterator is created: in the
        # first epoch of a fit (fresh or resumed) that happened before this hook, in later epochs
        # it happens after, so the first epoch consumes that draw here to keep the two identical.
        loader = self.trainer.train_dataloader
        generator = getattr(getattr(loader, "sampler", None), "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(int(self.options.seed) * 1000 + self.current_epoch)
            if self._first_epoch_of_fit:
                torch.empty((), dtype=torch.int64).random_(generator=generator)
        self._first_epoch_of_fit = False

    def on_train_batch_start(self, batch, batch_idx):
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._batch_started is None:
            return
        elapsed = max(time.perf_counter() - self._batch_started, 1e-9)
        self.log("tok/s", self._kept_tokens / elapsed, on_step=True, prog_bar=True,
                 batch_size=batch["fmri"].shape[0])

    def on_train_epoch_end(self) -> None:
        if self.device.type == "cuda":  # for the smoke tests' memory report
            self.log("gpu_mem_peak_gb", torch.cuda.max_memory_allocated(self.device) / 2**30, sync_dist=True,
                     reduce_fx="max")

    def configure_optimizers(self):
        o = self.options
        optimizer = build_optimizer(self.named_parameters(), learning_rate=o.learning_rate,
                                    weight_decay=o.weight_decay)
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = CosineAnnealingWarmUpRestarts(
            optimizer, total_steps=total_steps, warmup_ratio=o.warmup_ratio,
            min_lr_ratio=o.min_lr_ratio, cycle=o.cycle, gamma=o.gamma)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ evaluation
    def _evaluation_step(self, batch, stage: str):
        loss, outputs, _, _ = self._step(batch, stage)
        if self.task == "pretraining":
            # Per clip, recorded like fine-tuning's: the epoch mean is over unique clips, so
            # ZeRO-3's padded repeat batches and the batch composition change nothing. A clip
            # with fewer than 2 kept tokens has no loss (NaN) and is left out.
            keep = torch.isfinite(loss)
            idx = keep.nonzero().flatten().tolist()
            if idx:
                self._records[stage].add([batch["subject"][i] for i in idx], [batch["run"][i] for i in idx],
                                         torch.as_tensor(batch["start"]).reshape(-1)[idx],
                                         loss[keep][:, None], loss[keep], loss[keep])
            return loss[keep].mean() if idx else loss.new_zeros(())
        target = batch["target"]
        if self.task == "regression":
            target = self._standardise(target)
        if isinstance(loss, dict):  # auto: every candidate's clips recorded on their own
            for name in loss:
                records = self._candidate_records[stage].setdefault(name, ClipRecords())
                records.add(batch["subject"], batch["run"], batch["start"], outputs[name], target, loss[name])
            return torch.stack([v.mean() for v in loss.values()]).mean()
        self._records[stage].add(batch["subject"], batch["run"], batch["start"], outputs, target, loss)
        return loss.mean()

    def validation_step(self, batch, batch_idx):
        return self._evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._evaluation_step(batch, "test")

    def _evaluation_epoch_end(self, stage: str):
        if self.selecting_head:
            return self._candidates_epoch_end(stage)
        records, self._records[stage] = self._records[stage], ClipRecords()
        records = gather_records(records)
        shown = stage == "val"  # each epoch's validation metrics on the progress bar
        if self.task == "pretraining":
            self.log(f"{stage}/loss", mean_clip_loss(records), sync_dist=True, prog_bar=shown)
            return None, {}
        table, metrics = self._table_and_metrics(records)
        if not metrics:
            return table, {}
        self._log_metrics(stage, metrics, shown)
        return table, metrics

    def _table_and_metrics(self, records):
        """(subject table, metrics with the clip-level loss) of gathered records; no metrics
        without any subject."""
        table = aggregate_by_subject(records, self.options.eval_level)
        if not table.subjects:
            return table, {}
        # clip-level loss over the gathered clips: exact also when ranks hold unequal numbers
        metrics = {"loss": mean_clip_loss(records)}
        if self.task == "classification":
            metrics.update(classification_metrics(table.outputs, table.targets))
        else:
            metrics.update(regression_metrics(table.outputs[:, 0], table.targets, *self.target_stats()))
        return table, metrics

    def _log_metrics(self, stage: str, metrics: dict, shown: bool, prefix: str = "") -> None:
        # Every rank holds the same gathered values, so averaging them changes nothing.
        # on the bar, the loss and the headline metric beside it (the rest is in metrics.csv)
        bar = {"loss", "auroc" if self.task == "classification" else "mae"} if shown else set()
        for key, value in metrics.items():
            self.log(f"{stage}/{prefix}{key}", value, sync_dist=True, prog_bar=key in bar and not prefix)

    def _candidates_epoch_end(self, stage: str):
        """auto, validation: every candidate's metrics logged (val/<head>/<metric>), the leading
        head's as the run's own val/<metric> (what picks the best checkpoint), the epoch
        recorded. Test: the kept head only (the candidates are gone by then)."""
        results = {}
        for name in self.head_candidates:
            records = gather_records(self._candidate_records[stage].pop(name, ClipRecords()))
            results[name] = self._table_and_metrics(records)
        results = {name: r for name, r in results.items() if r[1]}
        if not results:
            return None, {}
        callback = self.trainer.checkpoint_callback
        monitor = getattr(callback, "monitor", None) or "val/loss"
        mode = getattr(callback, "mode", None) or "min"
        record = epoch_record(self.current_epoch, {n: m for n, (_, m) in results.items()}, monitor, mode)
        for name, (_, metrics) in results.items():
            self._log_metrics(stage, metrics, False, prefix=f"{name}/")
        table, metrics = results[record["leading"]]
        self._log_metrics(stage, metrics, stage == "val")
        if not self.trainer.sanity_checking:
            self.head_history.append(record)
        return table, metrics

    def on_validation_epoch_end(self):
        self._evaluation_epoch_end("val")

    def on_test_start(self) -> None:
        if self.selecting_head:  # the best checkpoint is loaded: keep its epoch's leading head
            rank_zero_info(f"[neuromamba] {self.keep_chosen_head()}")

    def on_test_epoch_end(self):
        self.test_table, self.test_metrics = self._evaluation_epoch_end("test")

    # ------------------------------------------------------------------ resume
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = collect_rng_states()
        if self.head_history:  # auto: every candidate's validation figures, and the choice
            checkpoint["head_history"] = list(self.head_history)
            checkpoint["head_choice"] = head_choice(self.head_history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        if "head_history" in checkpoint:
            self.head_history = list(checkpoint["head_history"])


def collect_rng_states() -> dict:
    """Python, NumPy and torch RNG states as tensors/primitives (weights_only-loadable)."""
    np_state = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                        "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
              "python": {"version": random.getstate()[0], "state": list(random.getstate()[1]),
                         "gauss": random.getstate()[2]}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
