#!/usr/bin/env bash
# Your own NIfTI data on a laptop CPU, end to end (docs/own-data-cpu.md walks through it):
# preprocess a BIDS derivatives tree, check it, pretrain a small model, fine-tune it on a label
# of participants.tsv, then predict one scan, embed the cohort, map attributions and fit the
# classical baselines of the run. Without BIDS=... it first writes a small synthetic cohort
# (24 subjects, 32 frames each, a planted group difference).
#   bash sample_scripts/own_data_cpu.sh
#   BIDS=/data/mystudy/derivatives TARGET=diagnosis OUT=runs/mystudy bash sample_scripts/own_data_cpu.sh
# For real 2 mm data add PREP_FLAGS="--resample_to 4" GRID="48 48 48": a 4 mm 48^3 grid keeps
# the whole brain at a size a CPU trains on.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=python_env.sh
source "$REPO/sample_scripts/python_env.sh"
neuromamba_env "$REPO" 2

OUT="${OUT:-$REPO/runs/own_data_cpu}"
BIDS="${BIDS:-$OUT/bids}"          # a BIDS derivatives tree holding participants.tsv
TARGET="${TARGET:-group}"           # the participants.tsv column to predict
GRID="${GRID:-24 24 24}"            # the model grid in voxels (--target_shape, --img_size D H W)
FRAMES="${FRAMES:-8}"               # frames per clip (--img_size T)
PREP_FLAGS="${PREP_FLAGS:-}"        # e.g. --resample_to 4 for 2 mm data on a 48^3 grid
EPOCHS="${EPOCHS:-8}"
# shellcheck disable=SC2206  # word lists on purpose
MODEL=(--embed_dim 32 --depth 2 --d_state 16 --headdim 32)
# shellcheck disable=SC2206
CLIPS=(--img_size $GRID "$FRAMES" --accelerator cpu --batch_size 4 --no_progress_bar --seed 3)
# Half the subjects train; a quarter validate and a quarter test (6 each of 24: enough for an AUC).
SPLIT=(--train_split 0.5 --val_split 0.25)
H5="$OUT/hdf5"
mkdir -p "$OUT"

if [ ! -e "$BIDS/participants.tsv" ]; then
    # 32 frames: pretraining on the tuned input (each voxel minus its run mean) needs runs of
    # >= 31 frames for clips of 8, or the run mean would leak a target's future (see the docs)
    "$PYTHON" "$REPO/sample_scripts/tasks/make_dummy_nifti.py" "$BIDS" --cohort 24 --frames 32
fi

echo "== 1. NIfTI -> HDF5, then a check of the folder"
# shellcheck disable=SC2086
"$PYTHON" "$REPO/project/preprocess.py" nifti --input "$BIDS" --output_dir "$H5" \
    --target_shape $GRID --min_frames "$FRAMES" --no_progress $PREP_FLAGS
"$PYTHON" "$REPO/project/preprocess.py" check "$H5" --quick --no_progress

echo "== 2. autoregressive pretraining (all subjects' training split, no labels)"
"$PYTHON" "$REPO/project/main.py" "${MODEL[@]}" "${CLIPS[@]}" "${SPLIT[@]}" --recipe tuned \
    --pretraining --use_autoregressive --calc_loss_without_background \
    --dataset_name CSV --image_path "$H5" --max_epochs "$EPOCHS" --learning_rate 5e-3 \
    --output_dir "$OUT" --run_name pretrain --overwrite_run

echo "== 3. fine-tuning on $TARGET (participants.tsv): frozen backbone, the head chosen on validation"
# --recipe tuned with --load_model_path: --freeze_feature_extractor --clf_head_version auto, at 5x
# the pretraining's learning rate (the recipe's ratio); tested once on the best checkpoint
"$PYTHON" "$REPO/project/main.py" "${MODEL[@]}" "${CLIPS[@]}" "${SPLIT[@]}" --recipe tuned \
    --dataset_name CSV --image_path "$H5" --label_csv "$BIDS/participants.tsv" \
    --target_column "$TARGET" --load_model_path "$OUT/pretrain" --calc_loss_without_background \
    --max_epochs "$EPOCHS" --learning_rate 2.5e-2 --output_dir "$OUT" --run_name finetune --overwrite_run

echo "== 4. the analysis tools on the fine-tuned run"
SCAN="$(find "$BIDS" -name '*_bold.nii*' | sort | head -n 1)"
"$PYTHON" "$REPO/project/predict.py" --checkpoint "$OUT/finetune" --nifti "$SCAN" --device cpu
"$PYTHON" "$REPO/project/embed.py" --checkpoint "$OUT/finetune" --dataset_name CSV --image_path "$H5" \
    --label_csv "$BIDS/participants.tsv" --probe_targets "$TARGET" --output "$OUT/embeddings.csv" --device cpu
"$PYTHON" "$REPO/project/attribute.py" --checkpoint "$OUT/finetune" --nifti "$SCAN" \
    --output_dir "$OUT/attributions" --n_steps 8 --device cpu
"$PYTHON" "$REPO/project/baseline.py" --run_dir "$OUT/finetune"
echo "== done: runs, embeddings, attributions and baselines are in $OUT"
