#!/usr/bin/env bash
# Create (or update) the NeuroMamba virtual environment.
#
#   bash setup_env.sh            # runtime dependencies
#   bash setup_env.sh --dev      # + test dependencies
#   bash setup_env.sh --no-kernels
#
# Environment variables:
#   NEUROMAMBA_VENV_PATH  where the venv goes (default: ./.venv)
#   NEUROMAMBA_TORCH      the pip requirement for PyTorch, installed FIRST (default: "torch",
#                         i.e. pip's build for this platform; e.g. "torch==2.13.0", or a wheel path)
#   NEUROMAMBA_PYTHON     the interpreter used to create the venv (default: python3)
#
# Order matters: torch first (everything else builds against it), then requirements.txt, then
# the fused Mamba kernels (mamba-ssm, causal-conv1d):
#   * on a machine with both `nvcc` and a visible CUDA GPU, built against the installed torch
#     (hence --no-build-isolation);
#   * elsewhere, with --dev only: mamba-ssm's Triton kernels without its CUDA build
#     (requirements-kernels-cpu.txt), so the tests run the real kernels on CPU in Triton's
#     interpreter. causal-conv1d is CUDA only and is skipped.
# Without them NeuroMamba runs its pure-PyTorch Mamba2 path.
# Re-running is safe: installed requirements are skipped by pip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${NEUROMAMBA_VENV_PATH:-$here/.venv}"
torch_req="${NEUROMAMBA_TORCH:-torch}"
python_bin="${NEUROMAMBA_PYTHON:-python3}"
dev=0
kernels=1
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --no-kernels) kernels=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "setup_env.sh: unknown option '$arg' (use --dev, --no-kernels, --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[setup_env] %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment at $venv"
  "$python_bin" -m venv "$venv"
else
  say "reusing virtual environment at $venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip

if "$py" -c "import torch" >/dev/null 2>&1; then
  say "PyTorch already installed: $("$py" -c 'import torch; print(torch.__version__)')"
else
  say "installing PyTorch first: $torch_req"
  "$py" -m pip install "$torch_req"
fi

say "installing requirements.txt"
"$py" -m pip install -r "$here/requirements.txt"
if [ "$dev" = 1 ]; then
  say "installing requirements-dev.txt"
  "$py" -m pip install -r "$here/requirements-dev.txt"
fi

# The version whose Triton kernels the CPU tests are known to run in the interpreter.
mamba_ssm_cpu_req="mamba-ssm==2.3.2.post1"
if [ "$kernels" = 1 ] && command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 \
   && nvidia-smi -L >/dev/null 2>&1; then
  if "$py" -c "import mamba_ssm, causal_conv1d" >/dev/null 2>&1; then
    say "fused Mamba kernels already installed"
  else
    say "CUDA GPU and nvcc found: building mamba-ssm>=2.3.0 and causal-conv1d>=1.5.1 (takes a while)"
    "$py" -m pip install --no-build-isolation "causal-conv1d>=1.5.1" "mamba-ssm>=2.3.0"
  fi
elif [ "$kernels" = 1 ] && [ "$dev" = 1 ] && [ "$(uname -s)" = Linux ]; then
  if "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('mamba_ssm') is None)"; then
    say "mamba-ssm already installed (its Triton kernels run on CPU in the tests)"
  else
    say "no CUDA GPU: installing $mamba_ssm_cpu_req's Triton kernels without its CUDA build (tests run them on CPU)"
    "$py" -m pip install -r "$here/requirements-kernels-cpu.txt"
    MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
      "$py" -m pip install --no-build-isolation --no-deps "$mamba_ssm_cpu_req"
  fi
else
  say "no nvcc + CUDA GPU (or --no-kernels): skipping fused kernels; the pure-PyTorch Mamba2 path will be used"
fi

say "installing the neuromamba package (editable: pip install -e .)"
"$py" -m pip install --no-deps -e "$here"
(cd / && "$py" -c "import neuromamba; print('[setup_env] neuromamba', neuromamba.__version__, 'imports fine')")
say "done. Activate with: source $venv/bin/activate"
