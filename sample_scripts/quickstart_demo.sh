#!/usr/bin/env bash
# The README's quick-start demo, CPU only, no data needed (a few minutes on 2 cores):
#   1. autoregressive pretraining of a tiny NeuroMamba on the synthetic Dummy fMRI,
#   2. fine-tuning that checkpoint for sex classification (linear head, brain tokens only),
#   3. subject-level test metrics of the best checkpoint (AUC, ACC, balanced ACC).
# Python: $PYTHON, else ./.venv/bin/python (made by setup_env.sh), else python.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi
OUT="${OUT:-$REPO/runs/quickstart}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
COMMON=(--accelerator cpu --embed_dim 32 --depth 2 --d_state 16 --headdim 32 --img_size 24 24 24 4
        --patch_size 6 6 6 2 --calc_loss_without_background --dataset_name Dummy
        --dummy_num_subjects 40 --train_split 0.5 --val_split 0.2 --stride_between_seq 4
        --batch_size 4 --seed 3 --output_dir "$OUT" --no_progress_bar)

echo "== 1/2 pretraining on Dummy data ($OUT/pretrain)"
"$PYTHON" "$REPO/project/main.py" "${COMMON[@]}" --run_name pretrain --pretraining --use_autoregressive \
    --max_epochs 3 --learning_rate 2e-2 > "$OUT.pretrain.log" 2>&1 || { tail -n 30 "$OUT.pretrain.log"; exit 1; }
grep '^\[neuromamba\]' "$OUT.pretrain.log"

echo "== 2/2 fine-tuning the pretrained backbone ($OUT/finetune)"
"$PYTHON" "$REPO/project/main.py" "${COMMON[@]}" --run_name finetune \
    --load_model_path "$OUT/pretrain/checkpoints/last.ckpt" --downstream_task sex \
    --downstream_task_type classification --clf_head_version linear --max_epochs 10 \
    --learning_rate 2e-2 --weight_decay 0 > "$OUT.finetune.log" 2>&1 || { tail -n 30 "$OUT.finetune.log"; exit 1; }
grep '^\[neuromamba\]' "$OUT.finetune.log"
"$PYTHON" - "$OUT/finetune/metrics.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("test/auroc")]
r = rows[-1]
print(f"test AUC {float(r['test/auroc']):.3f}  ACC {float(r['test/acc']):.3f}  "
      f"balanced ACC {float(r['test/balanced_acc']):.3f}  (subject level, best checkpoint)")
PY
echo "run folders: $OUT/pretrain  $OUT/finetune (predictions_test.csv, roc_test.png, metrics.csv)"
