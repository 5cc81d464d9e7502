#!/usr/bin/env bash
# Encoder mode (NeuroFM's "encoder"): export one embedding per clip and per subject from any
# checkpoint (this project's .ckpt, or a released backbone such as 3M_E192.pt with --img_size),
# then score built-in linear probes (logistic/ridge, 5-fold CV grouped by subject).
# Output formats by suffix: .csv, .npz, .parquet (needs pyarrow).
source "$(dirname "$0")/common.sh"

CKPT="$(pretrained_ckpt)"
"$PYTHON" "$REPO/project/embed.py" --checkpoint "$CKPT" $DUMMY_FLAGS \
    --device "$(analysis_device)" --output "$OUT/encoder/clip_embeddings.npz" \
    --probe_targets label age:regression --probe_level subject --json "$OUT/encoder/probes.json"
# Real data, released backbone:
#   python project/embed.py --checkpoint 3M_E192.pt --img_size 96 96 96 20 --dataset_name HCP \
#       --image_path /data/hcp_h5 --output hcp_emb.csv --label_csv hcp.csv --subject_column Subject \
#       --probe_targets Gender Age_in_Yrs
echo "subject embeddings: $OUT/encoder/clip_embeddings_subjects.npz"
