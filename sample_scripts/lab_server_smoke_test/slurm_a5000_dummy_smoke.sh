#!/usr/bin/env bash
# Install sanity check, no data needed: Base model (embed 192, 12 blocks), 96^3 x 20 clips,
# micro-batch 3, bf16, DeepSpeed ZeRO-1, 20 optimizer steps of autoregressive pretraining on
# the synthetic Dummy data, then a short validation/test. Prints peak GPU memory and tokens/s
# (the progress bar's tok/s and metrics.csv). One 24 GB GPU (A5000/A6000/3090/4090), ~10 min.
#   sbatch sample_scripts/lab_server_smoke_test/slurm_a5000_dummy_smoke.sh
#   ACCELERATOR=cpu bash sample_scripts/lab_server_smoke_test/slurm_a5000_dummy_smoke.sh   (tiny, ~1 min)
#SBATCH --job-name=neuromamba_dummy_smoke
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=00:30:00
#SBATCH --output=%x-%j.out
DATASET=Dummy
source "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/../..}/sample_scripts/env.sh"

if [ "$ACCELERATOR" = "cpu" ]; then
    steps=(--max_epochs 1 --limit_train_batches 20 --limit_val_batches 2 --limit_test_batches 2 --log_every_n_steps 1)
else
    if [ "$DRY_RUN" != 1 ]; then
        "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0))"
        "$PYTHON" -c "import mamba_ssm, causal_conv1d; print('fused Mamba2 kernels:', mamba_ssm.__version__)" \
            || echo "mamba_ssm/causal_conv1d not importable: the pure-PyTorch scan is used (slower)"
    fi
    BATCH_SIZE=3
    steps=(--max_epochs 1 --limit_train_batches 20 --limit_val_batches 4 --limit_test_batches 4
           --log_every_n_steps 1 --dummy_num_frames 40)
fi
neuromamba --run_name "dummy_smoke_${SLURM_JOB_ID:-local}" --pretraining --use_autoregressive \
    --calc_loss_without_background "${steps[@]}" "$@"
# Peak GPU memory, median throughput (kept tokens/s per device) and tokens kept, from metrics.csv.
"$PYTHON" "$REPO/sample_scripts/summarize_runs.py" --train "$OUT/dummy_smoke_${SLURM_JOB_ID:-local}"
