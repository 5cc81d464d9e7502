#!/usr/bin/env bash
# Task family: disease diagnosis, multi-class (here 3 synthetic classes). Reported per subject:
# accuracy, balanced accuracy, macro AUROC and per-class AUROC (test/auroc_class{k}).
# Real data: --dataset_name CSV --image_path /data/h5 --label_csv diagnoses.csv
# --downstream_task diagnosis --target_column dx (string labels are mapped to classes in sorted
# order; the mapping is saved as label_classes.json in the run folder).
source "$(dirname "$0")/common.sh"

main --run_name diagnosis $DUMMY_FLAGS --dummy_num_classes 3 --downstream_task diagnosis \
    --downstream_task_type classification --label_smoothing 0.1 --calc_loss_without_background

echo "per-class AUROC: grep auroc_class $OUT/diagnosis/metrics.csv; ROC curves: $OUT/diagnosis/roc_test.png"
