#!/usr/bin/env bash
# Attribution maps: integrated gradients of a fine-tuned model, averaged over the clips of a run,
# written as NIfTI on the ORIGINAL input grid and affine (3D; 4D with --four_d) plus a PNG of
# orthogonal slices over the mean volume, and a JSON summary (target, peak voxel and mm).
source "$(dirname "$0")/common.sh"

[ -f "$(best_ckpt demographic_sex)" ] || main --run_name demographic_sex $DUMMY_FLAGS \
    --downstream_task sex --downstream_task_type classification --calc_loss_without_background
[ -f "$OUT/new_scan.nii.gz" ] || "$PYTHON" "$(dirname "$0")/make_dummy_nifti.py" "$OUT/new_scan.nii.gz"

# One NIfTI run (explains the predicted class unless --target is given):
"$PYTHON" "$REPO/project/attribute.py" --checkpoint "$(best_ckpt demographic_sex)" \
    --nifti "$OUT/new_scan.nii.gz" --output_dir "$OUT/attributions" --four_d --n_steps 16 \
    --device "$(analysis_device)"
# One subject of a dataset (each of its runs; HDF5 runs carry their crop/pad record):
"$PYTHON" "$REPO/project/attribute.py" --checkpoint "$(best_ckpt demographic_sex)" \
    $DUMMY_FLAGS --subject dummy0000 --output_dir "$OUT/attributions" --n_steps 16 \
    --device "$(analysis_device)"
