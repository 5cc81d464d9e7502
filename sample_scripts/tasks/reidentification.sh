#!/usr/bin/env bash
# Task family: re-identification (fMRI retrieval): embed every run, then for each run retrieve
# the same subject's other runs from the gallery of all other runs by cosine similarity.
# Prints top-1, top-5, mAP and the chance level. Needs >= 2 runs (or sessions) per subject.
# Note: the Dummy generator draws each run of a subject independently, so on Dummy data the
# scores sit near chance; on real data use --dataset_name HCP --image_path /data/hcp_h5 (runs
# REST1/REST2 of a subject). tests/analysis checks retrieval on a planted subject pattern.
source "$(dirname "$0")/common.sh"

CKPT="$(pretrained_ckpt)"
"$PYTHON" "$REPO/project/embed.py" --checkpoint "$CKPT" $DUMMY_FLAGS --dummy_num_runs 2 \
    --device "$(analysis_device)" --output "$OUT/reid/embeddings.csv" --reid --reid_unit run \
    --json "$OUT/reid/results.json"
