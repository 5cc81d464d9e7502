# Which Python the sample scripts run, and its environment (sourced by every sample script).
#
# $PYTHON if set; else the project's virtual environment made by setup_env.sh
# ($NEUROMAMBA_VENV_PATH, default <repo>/.venv); else python3 on the PATH.
neuromamba_python() {
    local repo="$1" venv="${NEUROMAMBA_VENV_PATH:-$1/.venv}"
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x "$venv/bin/python" ]; then
        echo "$venv/bin/python"
    else
        command -v python3 || command -v python
    fi
}

# The environment every sample script runs project/*.py in: $PYTHON chosen as above, the
# checkout's package importable without installing it, and, when a default is given, a thread
# count for the CPU ops ($OMP_NUM_THREADS if set, else that default).
neuromamba_env() {
    local repo="$1"
    PYTHON="$(neuromamba_python "$repo")"
    export PYTHONPATH="$repo/project${PYTHONPATH:+:$PYTHONPATH}"
    if [ -n "${2:-}" ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$2}"; fi
}
