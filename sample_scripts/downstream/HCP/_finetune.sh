# Shared part of the HCP downstream scripts (sourced). On CPU, when no CKPT is given, a tiny
# backbone is first pretrained on the Dummy data so the fine-tuning path (checkpoint loading,
# freezing) is exercised too.
source "$(dirname "${BASH_SOURCE[0]}")/../../env.sh"

HEAD="${HEAD:-mamba}"            # --clf_head_version: linear | mamba
LABEL_SMOOTHING="${LABEL_SMOOTHING:-0.1}"

# The backbone to fine-tune: $CKPT (e.g. the released 3M_E192.pt), or on CPU a Dummy pretrain.
pretrained_backbone() {
    if [ -n "${CKPT:-}" ]; then echo "$CKPT"; return; fi
    if [ "$ACCELERATOR" != "cpu" ]; then
        echo "set CKPT=/path/to/3M_E192.pt (a released backbone or a pretraining run's checkpoint)" >&2
        return 1
    fi
    local run="pretrain_dummy_seed$SEED"
    if [ ! -f "$OUT/$run/checkpoints/last.ckpt" ]; then
        neuromamba --run_name "$run" --pretraining --use_autoregressive \
            --calc_loss_without_background --max_epochs 2 --learning_rate 2e-2 >&2
    fi
    echo "$OUT/$run/checkpoints/last.ckpt"
}
