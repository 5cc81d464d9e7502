#!/usr/bin/env bash
# Prompt tuning (NeuroSTORM's lightweight adaptation): K learnable prompt tokens are prepended
# to the backbone's sequence; the pretrained backbone stays frozen and only the prompt and the
# head are trained. The run log prints the trainable-parameter fraction.
source "$(dirname "$0")/common.sh"

CKPT="$(pretrained_ckpt)"
main --run_name prompt_tuning $DUMMY_FLAGS --downstream_task sex \
    --downstream_task_type classification --load_model_path "$CKPT" \
    --prompt_tuning --prompt_len 8 --calc_loss_without_background
# Real data: --dataset_name HCP --image_path /data/hcp_h5 --load_model_path 3M_E192.pt --model_size base
