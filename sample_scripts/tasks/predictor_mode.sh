#!/usr/bin/env bash
# Predictor mode: one command applies a fine-tuned checkpoint to a new NIfTI run: the run is
# preprocessed like the training data (crop/pad around the brain, run statistics, scaling),
# cut into clips, and the clip predictions are averaged (probability per class, or a value in
# the target's original units).
source "$(dirname "$0")/common.sh"

[ -f "$(best_ckpt demographic_sex)" ] || main --run_name demographic_sex $DUMMY_FLAGS \
    --downstream_task sex --downstream_task_type classification --calc_loss_without_background
"$PYTHON" "$(dirname "$0")/make_dummy_nifti.py" "$OUT/new_scan.nii.gz"

"$PYTHON" "$REPO/project/predict.py" --checkpoint "$(best_ckpt demographic_sex)" \
    --nifti "$OUT/new_scan.nii.gz" --device "$(analysis_device)"
"$PYTHON" "$REPO/project/predict.py" --checkpoint "$(best_ckpt demographic_sex)" \
    --nifti "$OUT/new_scan.nii.gz" --device "$(analysis_device)" --json
