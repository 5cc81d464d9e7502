#!/usr/bin/env bash
# HCP intelligence regression (fluid intelligence column of the HCP behavioural table; use
# --target_column to pick another, e.g. --target_column CogTotalComp_AgeAdj).
#   CKPT=3M_E192.pt IMAGE_PATH=/data/hcp_h5 bash sample_scripts/downstream/HCP/intelligence_regression.sh
#   ACCELERATOR=cpu bash sample_scripts/downstream/HCP/intelligence_regression.sh   (Dummy data:
#   the synthetic continuous target stands in for the score)
source "$(dirname "$0")/_finetune.sh"
neuromamba --run_name "hcp_intelligence_${HEAD}_seed${SEED}" --load_model_path "$(pretrained_backbone)" \
    --downstream_task intelligence --downstream_task_type regression --clf_head_version "$HEAD" \
    --calc_loss_without_background --project_name neuromamba_hcp_intelligence "$@"
