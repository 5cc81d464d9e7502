# Shared settings of the task-family sample scripts (sourced, not run).
#
# Defaults: the synthetic Dummy dataset, a tiny model and 24^3 x 4 clips on the CPU, so each
# script finishes in a few minutes anywhere. For real data and real sizes override, e.g.
#   ACCELERATOR=gpu MODEL_FLAGS="--model_size base" IMG_FLAGS="--img_size 96 96 96 20" \
#   TRAIN_FLAGS="--max_epochs 30 --batch_size 2 --precision bf16" bash <script>.sh
# and replace the --dataset_name Dummy lines by --dataset_name HCP --image_path /data/hcp_h5 ...
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../python_env.sh
source "$REPO/sample_scripts/python_env.sh"
neuromamba_env "$REPO"  # the package imports from the checkout even where it is not pip-installed
ACCELERATOR="${ACCELERATOR:-cpu}"
OUT="${OUT:-$REPO/runs/sample_tasks}"
MODEL_FLAGS="${MODEL_FLAGS:---embed_dim 16 --depth 2 --d_state 8 --headdim 16}"
IMG_FLAGS="${IMG_FLAGS:---img_size 24 24 24 4}"
TRAIN_FLAGS="${TRAIN_FLAGS:---max_epochs 3 --batch_size 4 --learning_rate 5e-3 --no_progress_bar --loggername csv}"
DUMMY_FLAGS="${DUMMY_FLAGS:---dataset_name Dummy --dummy_num_subjects 20}"
mkdir -p "$OUT"

# project/main.py with the settings above; extra flags (and overrides) follow. These example
# runs are scratch: running a task again replaces its own earlier runs (--overwrite_run).
main() {
    # shellcheck disable=SC2086  # the *_FLAGS variables are word lists on purpose
    "$PYTHON" "$REPO/project/main.py" --accelerator "$ACCELERATOR" $MODEL_FLAGS $IMG_FLAGS \
        $TRAIN_FLAGS --output_dir "$OUT" --overwrite_run "$@"
}

# The best validation checkpoint of run folder $OUT/$1 (falls back to last.ckpt).
best_ckpt() {
    local best
    best="$(ls "$OUT/$1"/checkpoints/best-*.ckpt 2>/dev/null | head -n 1 || true)"
    echo "${best:-$OUT/$1/checkpoints/last.ckpt}"
}

# A small autoregressively pretrained backbone, trained once and reused by the scripts.
pretrained_ckpt() {
    if [ ! -f "$OUT/pretrain/checkpoints/last.ckpt" ]; then
        # shellcheck disable=SC2086
        main --run_name pretrain $DUMMY_FLAGS --pretraining --use_autoregressive \
            --calc_loss_without_background >&2
    fi
    echo "$OUT/pretrain/checkpoints/last.ckpt"
}

# The device for the analysis CLIs (embed/predict/attribute), from ACCELERATOR.
analysis_device() {
    case "$ACCELERATOR" in gpu|cuda) echo cuda ;; *) echo cpu ;; esac
}
