#!/usr/bin/env bash
# Fine-tuning path check on Dummy data: loads a backbone checkpoint (CKPT: a released .pt such
# as 3M_E192.pt, a .ckpt or a DeepSpeed folder; default: a fresh Dummy pretrain), then trains a
# head with the toggles below for a few epochs and reports subject-level test AUC/ACC.
#   FREEZE=1  -> --freeze_feature_extractor (frozen backbone, head only)
#   HEAD=linear|mamba
#   sbatch --export=ALL,CKPT=3M_E192.pt,FREEZE=1,HEAD=linear sample_scripts/lab_server_smoke_test/slurm_a5000_dummy_finetune.sh
#   ACCELERATOR=cpu FREEZE=1 HEAD=mamba bash sample_scripts/lab_server_smoke_test/slurm_a5000_dummy_finetune.sh
#SBATCH --job-name=neuromamba_dummy_finetune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --output=%x-%j.out
DATASET=Dummy
source "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/../..}/sample_scripts/env.sh"
HEAD="${HEAD:-linear}"
FREEZE="${FREEZE:-0}"

if [ -z "${CKPT:-}" ]; then
    run="dummy_pretrain_for_finetune"
    if [ ! -f "$OUT/$run/checkpoints/last.ckpt" ]; then
        if [ "$ACCELERATOR" = "cpu" ]; then
            neuromamba --run_name "$run" --pretraining --use_autoregressive \
                --calc_loss_without_background --max_epochs 2 --learning_rate 2e-2
        else
            neuromamba --run_name "$run" --pretraining --use_autoregressive \
                --calc_loss_without_background --max_epochs 1 --limit_train_batches 20
        fi
    fi
    CKPT="$OUT/$run/checkpoints/last.ckpt"
fi
mode=()
if [ "$FREEZE" = "1" ]; then
    mode=(--freeze_feature_extractor)
    if [ "$ACCELERATOR" = "cpu" ]; then LEARNING_RATE=2e-2; fi
fi
if [ "$ACCELERATOR" != "cpu" ]; then MAX_EPOCHS="${FT_EPOCHS:-3}"; fi
neuromamba --run_name "dummy_finetune_${HEAD}_freeze${FREEZE}" --load_model_path "$CKPT" "${mode[@]}" \
    --downstream_task sex --downstream_task_type classification --clf_head_version "$HEAD" \
    --calc_loss_without_background "$@"
