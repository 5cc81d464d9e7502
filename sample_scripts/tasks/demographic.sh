#!/usr/bin/env bash
# Task family: demographic prediction (NeuroSTORM's first task): sex (classification) and age
# (regression, reported in years via the train-split mean/std stored in the checkpoint).
# Real data: replace $DUMMY_FLAGS by --dataset_name HCP --image_path /data/hcp_h5 (labels from
# metadata/*.csv, or --label_csv); add --load_model_path 3M_E192.pt to fine-tune a backbone.
source "$(dirname "$0")/common.sh"

main --run_name demographic_sex $DUMMY_FLAGS --downstream_task sex \
    --downstream_task_type classification --calc_loss_without_background

main --run_name demographic_age $DUMMY_FLAGS --downstream_task age \
    --downstream_task_type regression --calc_loss_without_background

echo "metrics: $OUT/demographic_sex/metrics.csv  $OUT/demographic_age/metrics.csv"
echo "subject-level predictions: $OUT/demographic_*/predictions_test.csv"
