#!/usr/bin/env bash
# Pretraining on one GPU (or ACCELERATOR=cpu on Dummy data) with the paper's per-GPU settings:
# micro-batch 3, bf16, lr 1e-4, wd 1e-2, 5% warmup, cosine to 1% of peak.
#   IMAGE_PATH=/data/hcp_h5 bash sample_scripts/pretraining/pretrain_single_gpu.sh
#   ACCELERATOR=cpu bash sample_scripts/pretraining/pretrain_single_gpu.sh
source "$(dirname "$0")/../env.sh"
if [ "$ACCELERATOR" = "cpu" ]; then
    neuromamba --run_name pretrain_dummy --pretraining --use_autoregressive \
        --calc_loss_without_background --max_epochs 2 --learning_rate 2e-2 "$@"
else
    neuromamba --run_name "pretrain_${MODEL_SIZE:-base}_1gpu" --pretraining --use_autoregressive \
        --calc_loss_without_background --batch_size 3 --max_epochs 40 --weight_decay 1e-2 "$@"
fi
