# Which Python the sample scripts run (sourced by env.sh and tasks/common.sh, not run).
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
