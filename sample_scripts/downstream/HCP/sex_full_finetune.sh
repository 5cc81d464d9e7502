#!/usr/bin/env bash
# HCP sex classification, full fine-tuning of a pretrained backbone (the paper's main result).
#   CKPT=3M_E192.pt IMAGE_PATH=/data/hcp_h5 HEAD=mamba bash sample_scripts/downstream/HCP/sex_full_finetune.sh
#   ACCELERATOR=cpu HEAD=linear bash sample_scripts/downstream/HCP/sex_full_finetune.sh   (Dummy data)
# From scratch instead: FROM_SCRATCH=1. Multi-GPU: DEVICES=12 NUM_NODES=2 (srun under SLURM).
source "$(dirname "$0")/_finetune.sh"
load=()
if [ -z "${FROM_SCRATCH:-}" ]; then load=(--load_model_path "$(pretrained_backbone)"); fi
neuromamba --run_name "hcp_sex_full_${HEAD}_seed${SEED}" "${load[@]}" --downstream_task sex \
    --downstream_task_type classification --clf_head_version "$HEAD" \
    --label_smoothing "$LABEL_SMOOTHING" --calc_loss_without_background \
    --project_name neuromamba_hcp_sex "$@"
