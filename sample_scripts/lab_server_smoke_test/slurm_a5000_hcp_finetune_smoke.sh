#!/usr/bin/env bash
# Real-data smoke test: HCP sex classification, 5 epochs of full fine-tuning from a released
# backbone on one GPU (~1-2 h), subject-level test AUC/ACC at the end.
#   sbatch --export=ALL,IMAGE_PATH=/data/hcp_h5,CKPT=3M_E192.pt sample_scripts/lab_server_smoke_test/slurm_a5000_hcp_finetune_smoke.sh
#   ACCELERATOR=cpu bash sample_scripts/lab_server_smoke_test/slurm_a5000_hcp_finetune_smoke.sh
#   (without IMAGE_PATH on CPU it runs the same fine-tune on the Dummy data)
#SBATCH --job-name=neuromamba_hcp_smoke
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
if [ "${ACCELERATOR:-gpu}" = "cpu" ] && [ -z "${IMAGE_PATH:-}" ]; then DATASET=Dummy; fi
source "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/../..}/sample_scripts/env.sh"
source "$REPO/sample_scripts/downstream/HCP/_finetune.sh"
if [ "$ACCELERATOR" != "cpu" ]; then MAX_EPOCHS="${MAX_EPOCHS_SMOKE:-5}"; fi
neuromamba --run_name "hcp_finetune_smoke_${SLURM_JOB_ID:-local}" --load_model_path "$(pretrained_backbone)" \
    --downstream_task sex --downstream_task_type classification --clf_head_version "${HEAD:-mamba}" \
    --label_smoothing 0.1 --calc_loss_without_background "$@"
