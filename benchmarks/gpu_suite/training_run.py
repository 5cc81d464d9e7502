"""(4) End to end through the user-facing CLI: pretrain on Dummy data, then fine-tune from it.

``project/main.py --pretraining`` runs ``train_steps`` optimizer steps (DeepSpeed ZeRO-1, bf16
on a GPU; the default strategy on CPU in --dry-run), then ``main.py --downstream_task sex``
fine-tunes from the run's ``last.ckpt`` (a DeepSpeed folder under DeepSpeed). Checks:
both runs exit 0; the pretraining loss went down (the validation loss, computed on the same
clips after every short epoch of ``train_batches_per_epoch`` steps, ends below its first value);
the checkpoint loads strictly into a fresh FMamba; the fine-tuned backbone stayed near the
pretrained one (it started from it) and its loss is finite.
"""
from __future__ import annotations

import csv
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .context import SuiteContext
from .results import checked

SECTION = "training"
PRETRAIN_RUN, FINETUNE_RUN = "suite_pretrain", "suite_finetune"


def common_flags(ctx: SuiteContext, steps: int) -> List[str]:
    s = ctx.settings
    dims = s.model(s.train_model)
    return [
        "--model_size", s.train_model,
        "--embed_dim", str(dims.embed_dim), "--depth", str(dims.depth),
        "--d_state", str(dims.d_state), "--headdim", str(dims.headdim),
        "--img_size", *map(str, s.img_size), "--patch_size", *map(str, s.patch_size),
        "--dataset_name", "Dummy", "--dummy_num_subjects", str(s.dummy_num_subjects),
        "--batch_size", str(s.train_batch), "--max_steps", str(steps), "--max_epochs", "1000",
        "--limit_train_batches", str(s.train_batches_per_epoch),
        "--strategy", s.train_strategy, "--precision", s.train_precision,
        "--accelerator", s.train_accelerator, "--devices", "1",
        "--num_workers", "0" if ctx.dry_run else "4",
        "--output_dir", os.path.join(ctx.work_dir, "runs"),
        "--loggername", "csv", "--log_every_n_steps", "1", "--no_progress_bar",
        "--seed", str(ctx.seed),
    ]


def pretrain_command(ctx: SuiteContext) -> List[str]:
    s = ctx.settings
    return [ctx.python, os.path.join(ctx.repo_root, "project", "main.py"), "--pretraining",
            "--use_autoregressive", "--calc_loss_without_background",
            "--learning_rate", repr(s.train_learning_rate), "--run_name", PRETRAIN_RUN,
            *common_flags(ctx, s.train_steps)]


def finetune_command(ctx: SuiteContext, checkpoint: str) -> List[str]:
    s = ctx.settings
    command = [ctx.python, os.path.join(ctx.repo_root, "project", "main.py"),
               "--downstream_task", "sex", "--downstream_task_type", "classification",
               "--clf_head_version", "linear", "--load_model_path", checkpoint,
               "--learning_rate", repr(s.train_learning_rate), "--run_name", FINETUNE_RUN,
               *common_flags(ctx, s.finetune_steps)]
    if os.path.isdir(checkpoint):  # DeepSpeed folders hold pickles; this one we just wrote
        command.append("--allow_pickle")
    return command


def run_dir(ctx: SuiteContext, name: str) -> Path:
    return Path(ctx.work_dir) / "runs" / name


def last_checkpoint(folder: Path) -> Path:
    path = folder / "checkpoints" / "last.ckpt"
    if not path.exists():
        found = sorted((folder / "checkpoints").glob("*.ckpt")) if (folder / "checkpoints").is_dir() else []
        raise FileNotFoundError(f"no checkpoints/last.ckpt in {folder} (found: {[p.name for p in found]})")
    return path


def step_losses(metrics_csv: Path, column: str = "train/loss_step") -> List[float]:
    """The values of ``column`` the CSV logger wrote (per-step training losses, or one
    validation loss per epoch for ``val/loss``), in step order."""
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"{metrics_csv}: the run wrote no metrics.csv")
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        raise ValueError(f"{metrics_csv}: no {column!r} column (columns: {sorted(rows[0])})")
    values = [(int(float(r.get("step") or 0)), float(r[column])) for r in rows if r.get(column)]
    return [v for _, v in sorted(values, key=lambda item: item[0])]


def loss_trend(losses: List[float]) -> Dict[str, float]:
    """Mean of the first and of the last fifth (at least one step each) of ``losses``."""
    if len(losses) < 2:
        raise ValueError(f"need at least 2 logged training losses, got {len(losses)}")
    k = max(1, len(losses) // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return {"first": first, "last": last, "ratio": last / first if first else float("nan"), "k": k}


def invoke(ctx: SuiteContext, command: List[str], log_name: str) -> Dict:
    """Run ``command`` with the suite's environment; stdout+stderr go to a log in work_dir."""
    log_path = Path(ctx.work_dir) / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        try:
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ctx.repo_root,
                                  timeout=ctx.settings.subprocess_timeout_s)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = 124
    seconds = time.perf_counter() - started
    tail = log_path.read_text(errors="replace").strip().splitlines()[-6:]
    return {"rc": rc, "seconds": seconds, "log": str(log_path), "tail": " / ".join(tail)}


def backbone_distance(a: Dict, b: Dict) -> float:
    """||a - b|| / ||b|| over the trainable backbone tensors both hold (no output layer, no
    fixed positional buffer)."""
    keys = [k for k in b if k in a and not k.startswith("output_layer.") and k != "embedder.pos"]
    if not keys:
        raise ValueError("the two state_dicts share no backbone tensors")
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys)
    den = sum(float(b[k].double().pow(2).sum()) for k in keys)
    return math.sqrt(num / max(den, 1e-30))


def fresh_backbone_state(ctx: SuiteContext) -> Dict:
    import torch
    from neuromamba.models.fmamba import FMamba

    s = ctx.settings
    torch.manual_seed(ctx.seed + 9973)  # any init other than the runs' own
    model = FMamba(**s.model(s.train_model).as_kwargs(), img_size=s.img_size, patch_size=s.patch_size,
                   pretraining=True)
    return {k: v.detach() for k, v in model.state_dict().items()}


def launch(ctx: SuiteContext, case: str, command: Callable[[], List[str]], log_name: str,
           run_name: str, fields: Dict) -> Optional[Path]:
    """Run one main.py command as an 'exit code' row (== 0 passes); its run folder when it
    passed, else None. ``command`` is built inside the guard, so its errors become rows too."""
    found: Dict[str, Path] = {}

    def body():
        result = invoke(ctx, command(), log_name)
        ok = result["rc"] == 0
        ctx.add(case=case, metric="exit code", value=result["rc"], limit="== 0",
                status="pass" if ok else "fail", note=f"{result['seconds']:.0f} s; log {result['log']}"
                + ("" if ok else f"; {result['tail']}"), extra=result, **fields)
        if ok:
            found["run_dir"] = run_dir(ctx, run_name)

    ctx.guarded(dict(fields, case=case, metric="exit code"), body)
    return found.get("run_dir")


def run(ctx: SuiteContext) -> None:
    s = ctx.settings
    fields = dict(section=SECTION, backend="auto", precision=s.train_precision, batch=s.train_batch)
    case_pre = f"pretrain {s.train_model} {s.train_steps} steps {s.train_strategy}"
    state: Dict[str, Optional[object]] = {}

    state["pretrain_dir"] = launch(ctx, case_pre, lambda: pretrain_command(ctx), "pretrain",
                                   PRETRAIN_RUN, fields)
    if state["pretrain_dir"] is None:
        return

    def loss_decreased():
        # The validation loss is computed on the same clips after every (short) epoch, so its
        # trend is not confounded by which clips a step happened to draw (per-step training
        # losses on Dummy data differ ten-fold between clips).
        metrics = state["pretrain_dir"] / "metrics.csv"
        val = step_losses(metrics, "val/loss")
        train = loss_trend(step_losses(metrics))
        if len(val) < 2:
            raise ValueError(f"only {len(val)} validation loss(es) in {metrics}; need 2 to see a trend")
        ratio = val[-1] / val[0]
        ctx.add(case=case_pre, metric="val loss last/first", value=ratio, limit="< 1",
                status="pass" if math.isfinite(ratio) and ratio < 1 else "fail",
                note=f"val loss per epoch {', '.join(f'{v:.4g}' for v in val)}; train loss first "
                     f"{train['k']} steps {train['first']:.4g} -> last {train['k']} {train['last']:.4g}",
                extra={"val_losses": val, "train_trend": train}, **fields)

    ctx.guarded(dict(fields, case=case_pre, metric="val loss last/first"), loss_decreased)

    def checkpoint_loads():
        import torch
        from neuromamba.checkpoints import load_pretrained, read_state_dict
        from neuromamba.models.fmamba import FMamba

        path = last_checkpoint(state["pretrain_dir"])
        model = FMamba(**s.model(s.train_model).as_kwargs(), img_size=s.img_size, patch_size=s.patch_size,
                       pretraining=True)
        report = load_pretrained(model, path, allow_pickle=True)
        state["checkpoint"] = str(path)
        state["pretrained"] = {k: v.detach().clone() for k, v in read_state_dict(path, allow_pickle=True).items()}
        same = all(torch.equal(model.state_dict()[k].cpu(), v.to(model.state_dict()[k].dtype))
                   for k, v in state["pretrained"].items() if k in model.state_dict())
        ctx.add(case=case_pre, metric="checkpoint tensors loaded", value=len(report.loaded), limit="strict",
                status="pass" if same else "fail",
                note=f"{report.format} checkpoint {path.name}; {len(report.loaded)} tensors, "
                     f"{'values identical after loading' if same else 'VALUES DIFFER after loading'}",
                **fields)

    ctx.guarded(dict(fields, case=case_pre, metric="checkpoint tensors loaded"), checkpoint_loads)
    if "checkpoint" not in state:
        return

    case_ft = f"finetune sex from last.ckpt {s.finetune_steps} steps {s.train_strategy}"

    state["finetune_dir"] = launch(ctx, case_ft, lambda: finetune_command(ctx, state["checkpoint"]),
                                   "finetune", FINETUNE_RUN, fields)
    if state["finetune_dir"] is None:
        return

    def finetune_checks():
        from neuromamba.checkpoints import read_state_dict

        losses = step_losses(state["finetune_dir"] / "metrics.csv")
        ctx.add(case=case_ft, metric="last train loss", value=losses[-1], limit="finite",
                status="pass" if all(math.isfinite(v) for v in losses) else "fail",
                note=f"{len(losses)} logged steps", extra={"losses": losses}, **fields)
        tuned = read_state_dict(last_checkpoint(state["finetune_dir"]), allow_pickle=True)
        moved = backbone_distance(tuned, state["pretrained"])
        fresh = backbone_distance(fresh_backbone_state(ctx), state["pretrained"])
        ctx.add(case=case_ft, metric="backbone drift from pretrained", value=moved,
                limit=f"< 0.25 x fresh-init distance ({fresh:.3f})",
                status=checked(moved, 0.25 * fresh),
                note="||finetuned - pretrained|| / ||pretrained||: small means the fine-tune started "
                     "from the checkpoint", **fields)

    ctx.guarded(dict(fields, case=case_ft, metric="last train loss"), finetune_checks)
