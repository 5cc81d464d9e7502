# Shared settings of the pretraining / downstream / smoke-test scripts (sourced, not run).
#
# On a GPU (default ACCELERATOR=gpu) the scripts use the paper's sizes (96^3 x 20 clips, bf16,
# DeepSpeed ZeRO-1) and real data (DATASET=HCP IMAGE_PATH=/path/to/hcp_hdf5). With
# ACCELERATOR=cpu they switch to the synthetic Dummy data, a tiny model and 24^3 x 4 clips, so
# every script finishes on a laptop in minutes. Every variable below can be overridden from the
# environment, e.g. `ACCELERATOR=cpu bash sample_scripts/downstream/HCP/sex_full_finetune.sh`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../python_env.sh
source "$REPO/sample_scripts/python_env.sh"
neuromamba_env "$REPO" 1
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/deepspeed}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$REPO/.triton}"

ACCELERATOR="${ACCELERATOR:-gpu}"
DEVICES="${DEVICES:-1}"
NUM_NODES="${NUM_NODES:-1}"
SEED="${SEED:-1234}"
OUT="${OUT:-$REPO/runs}"
LOGGER="${LOGGER:-csv}"          # wandb | tensorboard | csv (metrics.csv is always written)
# DRY_RUN=1: the script's first main.py command resolves its settings (main.py --dry_run:
# spec, model, memory estimate) and the script stops there; checks a GPU/cluster script anywhere.
DRY_RUN="${DRY_RUN:-0}"

if [ "$ACCELERATOR" = "cpu" ]; then
    DATASET="${DATASET:-Dummy}"
    SIZE_FLAGS="${SIZE_FLAGS:---embed_dim 16 --depth 2 --d_state 8 --headdim 16 --img_size 24 24 24 4}"
    PRECISION="${PRECISION:-32}"
    STRATEGY="${STRATEGY:-auto}"
    BATCH_SIZE="${BATCH_SIZE:-4}"
    MAX_EPOCHS="${MAX_EPOCHS:-8}"          # enough for the planted signal to be learned on CPU
    LEARNING_RATE="${LEARNING_RATE:-2e-2}"
    DUMMY_SUBJECTS="${DUMMY_SUBJECTS:-40}"
else
    DATASET="${DATASET:-HCP}"
    SIZE_FLAGS="${SIZE_FLAGS:---model_size ${MODEL_SIZE:-base} --img_size 96 96 96 20}"
    PRECISION="${PRECISION:-bf16}"
    STRATEGY="${STRATEGY:-deepspeed_stage_1}"
    BATCH_SIZE="${BATCH_SIZE:-2}"
    MAX_EPOCHS="${MAX_EPOCHS:-30}"
    LEARNING_RATE="${LEARNING_RATE:-1e-4}"
    DUMMY_SUBJECTS="${DUMMY_SUBJECTS:-40}"
fi

if [ "$DATASET" = "Dummy" ]; then
    DATA_FLAGS="--dataset_name Dummy --dummy_num_subjects $DUMMY_SUBJECTS"
else
    DATA_FLAGS="--dataset_name $DATASET --image_path ${IMAGE_PATH:?set IMAGE_PATH to the HDF5 folder (or DATASET=Dummy)}"
fi

# project/main.py with the shared flags; script-specific flags (and overrides) follow.
# Under SLURM with several tasks it runs through srun (Lightning reads the SLURM environment).
neuromamba() {
    local launch=()
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "${SLURM_NTASKS:-1}" -gt 1 ]; then launch=(srun); fi
    # shellcheck disable=SC2086  # the *_FLAGS variables are word lists on purpose
    if [ "$DRY_RUN" = 1 ]; then launch=(); set -- "$@" --dry_run; fi
    "${launch[@]}" "$PYTHON" "$REPO/project/main.py" --accelerator "$ACCELERATOR" --devices "$DEVICES" \
        --num_nodes "$NUM_NODES" --strategy "$STRATEGY" --precision "$PRECISION" --seed "$SEED" \
        $SIZE_FLAGS $DATA_FLAGS --batch_size "$BATCH_SIZE" --max_epochs "$MAX_EPOCHS" \
        --learning_rate "$LEARNING_RATE" --loggername "$LOGGER" --output_dir "$OUT" "$@"
    if [ "$DRY_RUN" = 1 ]; then exit 0; fi
}

# The best validation checkpoint of run folder $OUT/$1 (falls back to last.ckpt).
best_ckpt() {
    local best
    best="$(ls -d "$OUT/$1"/checkpoints/best-* 2>/dev/null | head -n 1 || true)"
    echo "${best:-$OUT/$1/checkpoints/last.ckpt}"
}
