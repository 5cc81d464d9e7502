#!/usr/bin/env bash
# Repeat a downstream script over 3 seeds and print mean ± std of the test metrics, as the
# paper reports. Usage:
#   bash sample_scripts/downstream/repeat_seeds.sh sample_scripts/downstream/HCP/sex_full_finetune.sh [flags]
#   ACCELERATOR=cpu HEAD=linear bash sample_scripts/downstream/repeat_seeds.sh sample_scripts/downstream/HCP/sex_frozen_backbone.sh
# SEEDS="1 2 3" by default. Each run's folder name ends in _seed<N>.
set -euo pipefail
script="${1:?usage: repeat_seeds.sh <downstream script> [extra flags]}"
shift
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$REPO/runs}"
export OUT
mkdir -p "$OUT"
runs=()
for seed in ${SEEDS:-1 2 3}; do
    SEED="$seed" bash "$script" "$@" | tee "$OUT/.repeat_seed${seed}.log"
    run_dir="$(sed -n 's/^\[neuromamba\] run folder: //p' "$OUT/.repeat_seed${seed}.log" | tail -n 1)"
    runs+=("$run_dir")
done
# shellcheck source=../python_env.sh
source "$REPO/sample_scripts/python_env.sh"
"$(neuromamba_python "$REPO")" "$REPO/sample_scripts/summarize_runs.py" "${runs[@]}"
