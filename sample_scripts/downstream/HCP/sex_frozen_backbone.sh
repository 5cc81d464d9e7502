#!/usr/bin/env bash
# HCP sex classification with a frozen backbone, head only (paper §4.3 / Table 1 setup).
# Tokens: brain only (default) or all tokens with TOKENS=all (the Table 1 ablation).
#   CKPT=5M_E256.pt MODEL_SIZE=medium IMAGE_PATH=/data/hcp_h5 HEAD=linear bash sample_scripts/downstream/HCP/sex_frozen_backbone.sh
#   ACCELERATOR=cpu HEAD=mamba bash sample_scripts/downstream/HCP/sex_frozen_backbone.sh   (Dummy data)
source "$(dirname "$0")/_finetune.sh"
tokens=(--calc_loss_without_background)
if [ "${TOKENS:-brain}" = "all" ]; then tokens=(--background_removal none); fi
if [ "$ACCELERATOR" = "cpu" ]; then LEARNING_RATE="${LEARNING_RATE_FROZEN:-2e-2}"; fi
neuromamba --run_name "hcp_sex_frozen_${HEAD}_${TOKENS:-brain}_seed${SEED}" \
    --load_model_path "$(pretrained_backbone)" --freeze_feature_extractor \
    --downstream_task sex --downstream_task_type classification --clf_head_version "$HEAD" \
    --label_smoothing "$LABEL_SMOOTHING" "${tokens[@]}" --project_name neuromamba_hcp_sex "$@"
