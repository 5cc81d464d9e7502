"""The sample scripts run the project's own interpreter, and their helpers answer --help."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_for(repo: Path, **env) -> str:
    script = f'source "{ROOT}/sample_scripts/python_env.sh"; neuromamba_python "{repo}"'
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "NEUROMAMBA_VENV_PATH")}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                          env={**clean, **env}).stdout.strip()


def test_sample_scripts_find_the_projects_venv(tmp_path):
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("#!/bin/sh\n")
    venv_python.chmod(0o755)
    assert _python_for(tmp_path) == str(venv_python)
    other = tmp_path / "elsewhere" / "bin" / "python"
    other.parent.mkdir(parents=True)
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert _python_for(tmp_path, NEUROMAMBA_VENV_PATH=str(tmp_path / "elsewhere")) == str(other)
    assert _python_for(tmp_path, PYTHON="/opt/py/bin/python3") == "/opt/py/bin/python3"
    # no venv, no $PYTHON: the python3 found first on the PATH, exactly
    on_path = tmp_path / "bin" / "python3"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert _python_for(tmp_path / "novenv", PATH=f"{on_path.parent}:/usr/bin:/bin") == str(on_path)


def test_summarize_runs_help():
    out = subprocess.run([sys.executable, str(ROOT / "sample_scripts" / "summarize_runs.py"), "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "usage:" in out.stdout and "--train" in out.stdout
