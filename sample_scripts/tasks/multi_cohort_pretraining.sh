#!/usr/bin/env bash
# Multi-cohort pretraining: several --dataset_name / --image_path pairs in one run; subject ids
# become "<cohort>:<subject>", each cohort is split 80/10/10 on its own, and training clips are
# drawn in proportion to cohort size (default) or uniformly per cohort (--cohort_sampling uniform).
# Here two synthetic cohorts of different sizes are written as HDF5 runs and read under the
# cohort names UKB and ABCD (pretraining reads no labels, so any registered name works).
source "$(dirname "$0")/common.sh"

for cohort in ukb:24:1 abcd:8:2; do
    IFS=: read -r name subjects seed <<< "$cohort"
    if [ ! -d "$OUT/cohort_$name" ]; then
        "$PYTHON" - "$OUT/cohort_$name" "$REPO/project" "$subjects" "$seed" <<'PY'
import sys
from neuromamba.data.dummy import DummySpec, write_dummy_runs
write_dummy_runs(sys.argv[1], DummySpec(num_subjects=int(sys.argv[3]), img_size=(24, 24, 24),
                                        num_frames=8, seed=int(sys.argv[4])))
PY
    fi
done

main --run_name multi_cohort --pretraining --use_autoregressive --calc_loss_without_background \
    --dataset_name UKB ABCD --image_path "$OUT/cohort_ukb" "$OUT/cohort_abcd" \
    --cohort_sampling uniform
# Real data: --dataset_name UKB ABCD HCP --image_path /data/ukb_h5 /data/abcd_h5 /data/hcp_h5
