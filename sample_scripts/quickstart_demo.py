"""The README's quick-start demo: CPU only, no data needed (its time on 2 cores is measured in
docs/installation.md, the one place that gives it).

1. autoregressive pretraining of a tiny NeuroMamba on the synthetic Dummy fMRI (brain-shaped
   volumes with a planted label signal);
2. fine-tuning that checkpoint for sex classification (brain tokens only);
3. subject-level test metrics of the best checkpoint: AUC, ACC, balanced ACC.

Both steps use this project's tuned recipe (``--recipe tuned``: each brain voxel's mean over the
whole run removed, the static image as the first time token). Fine-tuning with it freezes the
pretrained backbone and keeps the head (linear, attention or connectivity) with the best
validation figure, the recipe's two-command protocol. It learns the Dummy data's planted
regional signal at this tiny size; the paper's recipe is the default of every other command
(docs/training.md, "Recipes").

    python sample_scripts/quickstart_demo.py [--out runs/quickstart]
"""
import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "project" / "main.py"


def common_flags(out: Path) -> list:
    return ["--accelerator", "cpu", "--embed_dim", "32", "--depth", "2", "--d_state", "16", "--headdim", "32",
            "--img_size", "24", "24", "24", "4", "--patch_size", "6", "6", "6", "2",
            "--calc_loss_without_background", "--dataset_name", "Dummy", "--dummy_num_subjects", "40",
            "--train_split", "0.5", "--val_split", "0.2", "--batch_size", "4",
            "--seed", "3", "--output_dir", str(out), "--no_progress_bar", "--recipe", "tuned",
            "--overwrite_run"]  # the demo's runs are scratch: running it again replaces them


def step(title: str, flags: list, log: Path) -> None:
    print(f"== {title} (log: {log})", flush=True)
    started = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(MAIN), *flags], stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        print(log.read_text()[-3000:])
        sys.exit(f"{title} failed (exit {proc.returncode})")
    for line in log.read_text().splitlines():
        if line.startswith("[neuromamba]"):
            print("  " + line)
    print(f"  done in {time.time() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "runs" / "quickstart"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    flags = common_flags(out)
    step("1/2 pretraining on Dummy data", flags + ["--run_name", "pretrain", "--pretraining", "--use_autoregressive",
                                                    "--max_epochs", "3", "--learning_rate", "2e-2"],
         out / "pretrain.log")
    step("2/2 fine-tuning the pretrained backbone", flags + [
        "--run_name", "finetune", "--load_model_path", str(out / "pretrain" / "checkpoints" / "last.ckpt"),
        "--downstream_task", "sex", "--downstream_task_type", "classification",
        "--max_epochs", "10", "--learning_rate", "2e-2", "--weight_decay", "0"], out / "finetune.log")
    with open(out / "finetune" / "metrics.csv") as f:
        row = [r for r in csv.DictReader(f) if r.get("test/auroc")][-1]
    print(f"test AUC {float(row['test/auroc']):.3f}  ACC {float(row['test/acc']):.3f}  "
          f"balanced ACC {float(row['test/balanced_acc']):.3f}  (subject level, best checkpoint)")
    print(f"run folders: {out / 'pretrain'}  {out / 'finetune'} (predictions_test.csv, roc_test.png, metrics.csv)")


if __name__ == "__main__":
    main()
