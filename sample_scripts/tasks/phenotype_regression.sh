#!/usr/bin/env bash
# Task family: phenotype regression on ANY column of a label CSV (--dataset_name CSV
# --label_csv FILE --target_column COLUMN). Here the Dummy data is first written as HDF5 runs with
# a labels.csv (subject, run, label, age), then column "age" is regressed. For your data:
# --image_path <HDF5 folder from project/preprocess.py> --label_csv phenotypes.csv
# --target_column CogTotalComp_AgeAdj (any numeric column).
source "$(dirname "$0")/common.sh"

DATA="$OUT/phenotype_data"
if [ ! -f "$DATA/labels.csv" ]; then
    "$PYTHON" - "$DATA" "$REPO/project" <<'PY'
import sys
from neuromamba.data.dummy import DummySpec, write_dummy_runs
write_dummy_runs(sys.argv[1], DummySpec(num_subjects=20, img_size=(24, 24, 24), num_frames=8),
                 task_type="regression")
PY
fi

main --run_name phenotype_age --dataset_name CSV --image_path "$DATA" \
    --label_csv "$DATA/labels.csv" --downstream_task phenotype --target_column age \
    --downstream_task_type regression --calc_loss_without_background

echo "metrics (mse/mae in standardised and original units, pearson_r): $OUT/phenotype_age/metrics.csv"
