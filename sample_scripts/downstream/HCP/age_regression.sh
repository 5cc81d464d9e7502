#!/usr/bin/env bash
# HCP age regression: targets standardised with train-split statistics (kept in the checkpoint);
# MSE/MAE reported standardised and in years, plus Pearson r; scatter_test.png in the run folder.
#   CKPT=3M_E192.pt IMAGE_PATH=/data/hcp_h5 bash sample_scripts/downstream/HCP/age_regression.sh
#   ACCELERATOR=cpu bash sample_scripts/downstream/HCP/age_regression.sh   (Dummy data)
source "$(dirname "$0")/_finetune.sh"
neuromamba --run_name "hcp_age_${HEAD}_seed${SEED}" --load_model_path "$(pretrained_backbone)" \
    --downstream_task age --downstream_task_type regression --clf_head_version "$HEAD" \
    --calc_loss_without_background --project_name neuromamba_hcp_age "$@"
