#!/usr/bin/env bash
# Task family: task-state classification: labels per run (or per block of frames), not per
# subject; evaluation averages clips per run (--eval_level run). Here every Dummy subject has 4
# runs, each in one of 2 states. Real data: a --label_csv with columns subject,run,state (and
# optionally start_frame,end_frame for blocks; then use --eval_level clip).
source "$(dirname "$0")/common.sh"

main --run_name task_state $DUMMY_FLAGS --dummy_num_runs 4 --dummy_label_level run \
    --eval_level run --downstream_task state --downstream_task_type classification \
    --calc_loss_without_background

echo "run-level metrics: $OUT/task_state/metrics.csv"
