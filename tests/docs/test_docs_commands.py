"""Every command the docs show runs as written, at tiny sizes (tests/docs/doc_commands.py finds
them; the override set below is all that changes).

The override set, applied where a command allows it:
* paths: each placeholder (``/data/hcp_h5``, ``/path/to/3M_E192.pt``, ``run.nii.gz``,
  ``runs/x/checkpoints/best.ckpt`` ...) becomes a tiny stand-in of the same kind
  (:func:`doc_world`); every output path (``--output_dir``, ``--output``, ``--out``, a script's
  ``OUT``) a fresh folder, never the checkout;
* sizes: ``--img_size 24 24 24 4``, one block, one epoch of at most two batches, 32-bit on the
  CPU, one device, one node (the flags in :data:`TINY`); ``...`` in a command stands for them;
* marked commands (``[GPU]``, ``[cluster]``, ``[internet]`` in the doc): ``main.py`` runs with
  ``--dry_run`` at the doc's own sizes; a script is checked by ``bash -n`` and, when it runs
  ``main.py`` through sample_scripts/env.sh, by ``DRY_RUN=1`` (its first training command
  resolved, model built, memory estimated);
* install lines are what ``.ci/run`` runs on a clean clone; here their files are checked.

The fast set runs in the default suite. Scripts that train, the benchmarks, the quickstart
and every sample_scripts/tasks/*.sh form the full set:
``NEUROMAMBA_DOCS_FULL=1 python -m pytest -q tests/docs`` (README "Tests" gives its time).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from doc_commands import ROOT, DocCommand, doc_commands, help_commands
from process_helpers import run_process_group

FULL = os.environ.get("NEUROMAMBA_DOCS_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="full docs set: NEUROMAMBA_DOCS_FULL=1")

# flag -> tiny values (None: drop the flag)
TINY = {
    "--img_size": ["24", "24", "24", "4"], "--depth": ["1"], "--precision": ["32"],
    "--accelerator": ["cpu"], "--devices": ["1"], "--num_nodes": ["1"], "--strategy": ["auto"],
    "--loggername": ["csv"], "--max_epochs": ["1"], "--num_workers": ["1"], "--batch_size": ["2"],
    "--target_shape": ["24", "24", "24"],
}
RUN_LIMITS = ["--limit_train_batches", "2", "--limit_val_batches", "1", "--limit_test_batches", "1",
              "--no_progress_bar"]
ELLIPSIS = ["--embed_dim", "16", "--d_state", "8", "--headdim", "16", "--img_size", "24", "24", "24", "4"]
PREPROCESS_TINY = {"--num_subjects": ["10"], "--num_frames": ["8"], "--num_workers": ["1"],
                   "--target_shape": ["24", "24", "24"], "--img_size": ["24", "24", "24"]}
PREPROCESS_GRID_FLAG = {"nifti": "--target_shape", "legacy": "--target_shape", "dummy": "--img_size"}
OUTPUT_FLAGS = ("--output_dir", "--output", "--out", "--json", "--workdir")
SCRIPTS = {"main": "train", "preprocess": "preprocess", "check_flops": "flops", "embed": "embed",
           "predict": "predict", "attribute": "attribute", "baseline": "baseline"}
TIMEOUT = 600


# ---------------------------------------------------------------------------------------------
# The tiny world the placeholders point to
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def doc_world(tmp_path_factory):
    from neuromamba.checkpoints import save_released_format
    from neuromamba.commands.train import main as train
    from neuromamba.data.dummy import DummySpec, write_dummy_runs
    from neuromamba.models import FMamba

    root = tmp_path_factory.mktemp("docs")
    nifti = root / "nifti"
    for i, seed in enumerate((1, 2)):
        path = nifti / f"sub-0{i + 1}" / "func" / f"sub-0{i + 1}_task-rest_bold.nii.gz"
        path.parent.mkdir(parents=True)
        subprocess.run([sys.executable, str(ROOT / "sample_scripts" / "tasks" / "make_dummy_nifti.py"),
                        str(path), "--frames", "20", "--seed", str(seed)], check=True, capture_output=True)
    run_nifti = nifti / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    legacy = root / "legacy" / "img" / "100206"
    legacy.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for t in range(20):  # the original layout on FSL's 91x109x91 grid, a 2 cm "brain" at its centre
        frame = torch.zeros(91, 109, 91)
        frame[40:50, 49:59, 40:50] = 100 + torch.randn(10, 10, 10, generator=generator)
        torch.save(frame, legacy / f"frame_{t}.pt")
    h5 = root / "hcp_h5"
    write_dummy_runs(h5, DummySpec(num_subjects=10, img_size=(24, 24, 24), num_frames=20, seed=3))  # 20: safe for run-mean pretraining at T=4
    subjects = sorted(p.name for p in h5.iterdir() if p.is_dir())
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "sex", "age", "group"])
        for i, s in enumerate(subjects):
            writer.writerow([s, "MF"[i % 2], 22 + i, ("case", "control")[i % 2]])
    (root / "metadata").mkdir()
    with open(root / "metadata" / "hcp_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Subject", "Gender", "Age_in_Yrs"])
        for i, s in enumerate(subjects):
            writer.writerow([s, "MF"[i % 2], 22 + i])
    torch.manual_seed(0)
    released = save_released_format(FMamba.from_variant("base", depth=1, img_size=(24, 24, 24, 4)),
                                    root / "3M_E192.pt")
    runs = root / "runs"
    assert train(["--dataset_name", "Dummy", "--dummy_num_subjects", "10", "--downstream_task", "sex",
                  *ELLIPSIS, "--depth", "1", "--img_size", "24", "24", "24", "4", "--accelerator", "cpu",
                  "--max_epochs", "1", "--output_dir", str(runs), "--run_name", "x", "--no_progress_bar",
                  "--calc_loss_without_background"]) == 0
    best = runs / "x" / "checkpoints" / "best.ckpt"
    assert best.exists()
    paths = {
        "/data/hcp_nifti": nifti, "/data/mystudy/derivatives": nifti, "RUNS": nifti,
        "/data/swift_img": root / "legacy", "/data/old_hcp": root / "legacy", "OLD": root / "legacy",
        "/data/hcp_h5": h5, "/path/to/hdf5": h5, "/path/to/hcp_hdf5": h5, "/data/mystudy/hdf5": h5,
        "/data/hcp_hdf5": h5, "/data/h5": h5, "/d/hcp_h5": h5, "/d/ukb_h5": h5, "/d/abcd_h5": h5,
        "/data/pretrain_h5": h5, "HDF5": h5,
        "/path/to/3M_E192.pt": released, "3M_E192.pt": released, "$PWD/3M_E192.pt": released,
        "runs/x/checkpoints/best.ckpt": best, "best.ckpt": best, "runs/x": runs / "x",
        "runs/HCP_sex_classification_E192_D12_seed1234_x": runs / "x",
        "run.nii.gz": run_nifti, "labels.csv": root / "labels.csv", "100206": subjects[0],
        "/data/mystudy/derivatives/participants.tsv": root / "labels.csv",
    }
    return {"root": root, "paths": {k: str(v) for k, v in paths.items()}, "h5": h5}


def _fresh(world, name: str) -> Path:
    out = world["root"] / "out" / re.sub(r"[^A-Za-z0-9_.]+", "_", name)[:80]
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _mapped(value: str, paths: dict, earlier: dict) -> str:
    """A placeholder path -> its stand-in; a path an earlier command of the block wrote (or a
    file inside it) -> where that output really went."""
    for old, new in earlier.items():
        if value == old or value.startswith(old.rstrip("/") + "/"):
            return new + value[len(old.rstrip("/")):] if value != old else new
    return paths.get(value, value)


def tiny_argv(words, world, out: Path, keep_sizes: bool = False, earlier: dict | None = None):
    """The words with paths, outputs and (unless ``keep_sizes``) sizes replaced; ``earlier``
    maps the outputs of the block's earlier commands (and gets this one's)."""
    result = []
    paths = world["paths"]
    earlier = {} if earlier is None else earlier
    words = [w for word in words for w in (ELLIPSIS + ["--depth", "1", "--max_epochs", "1"] if word == "..." else [word])]
    for flag, values in flag_groups(words):
        if flag in OUTPUT_FLAGS:
            for v in values:  # the same path twice in a block is one folder, as for a reader
                earlier.setdefault(v, str(out / (Path(v).name or "out")))
            values = [earlier[v] for v in values]
        elif flag is not None and not keep_sizes and flag in TINY:
            values = TINY[flag]
        else:
            values = [_mapped(v, paths, earlier) for v in values]
        result += ([flag] if flag else []) + list(values)
    return result


def flag_groups(words):
    """(flag, its values) in order; words before the first flag come as (None, those words)."""
    i = 0
    while i < len(words):
        is_flag = words[i].startswith("--")
        j = i + 1 if is_flag else i
        while j < len(words) and not words[j].startswith("--"):
            j += 1
        yield (words[i], words[i + 1:j]) if is_flag else (None, words[i:j])
        i = j


def with_values(words, table: dict):
    """The words with the values of the flags in ``table`` replaced by the table's."""
    return [w for flag, values in flag_groups(words)
            for w in ([flag] if flag else []) + list(table.get(flag, values) if flag else values)]


# ---------------------------------------------------------------------------------------------
# Running one command
# ---------------------------------------------------------------------------------------------


def run_python_script(script: str, argv, capsys) -> tuple:
    """``python project/<script>.py argv`` in this process, as the console command runs it."""
    from neuromamba.commands import main as console

    code = console([SCRIPTS[script], *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run_bash(words, env, cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    """A shell command in its own process group, killed whole on timeout."""
    bin_dir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable,
                "OMP_NUM_THREADS": "1", **env}
    proc = run_process_group(words, env=full_env, cwd=cwd, timeout=timeout, merge_stderr=True)
    return subprocess.CompletedProcess(words, proc.returncode, proc.stdout, "")


def no_traceback(output: str) -> None:
    assert "Traceback (most recent call last)" not in output, output[-3000:]


def check_python_command(cmd: DocCommand, world, capsys) -> str:
    env, words = cmd.env_and_argv()
    assert words[0] == "python" and words[1].startswith("project/"), cmd.text
    script = Path(words[1]).stem
    out = _fresh(world, cmd.ident)
    gpu = "GPU" in cmd.marks or "cluster" in cmd.marks
    argv = tiny_argv(words[2:], world, out, keep_sizes=gpu,
                     earlier=world.setdefault("block_outputs", {}).setdefault(cmd.block, {}))
    if script == "preprocess" and argv[0] in PREPROCESS_GRID_FLAG:
        argv = with_values(argv, PREPROCESS_TINY)
        flag = PREPROCESS_GRID_FLAG[argv[0]]
        argv += [] if flag in argv else [flag, "24", "24", "24"]
    if script == "main":
        argv += ["--output_dir", str(out)] if "--output_dir" not in argv else []
        argv += ["--dry_run"] if gpu else RUN_LIMITS
        if not gpu and "--img_size" not in argv:
            argv += ["--img_size", *TINY["--img_size"]]
    code, output = run_python_script(script, argv, capsys)
    assert code == 0, f"{cmd.source}: {cmd.text}\n-> {argv}\n{output[-3000:]}"
    no_traceback(output)
    if "--dry_run" not in argv:
        check_promised_outputs(cmd, script, argv)
    return output


def check_promised_outputs(cmd: DocCommand, script: str, argv) -> None:
    """Exit 0 is not enough: what the command writes is there. Every output it names exists
    (a file, or a folder with something in it); a training leaves a finished run record; a
    conversion leaves HDF5 runs."""
    named = [Path(v) for flag, values in flag_groups(argv) if flag in OUTPUT_FLAGS for v in values
             if flag != "--json" or v.endswith(".json")]
    for path in named:
        assert path.exists() and (path.is_file() or any(path.iterdir())), \
            f"{cmd.source}: {cmd.text}\n-> {argv}\nwrote nothing at {path}"
    if script == "main" and "--output_dir" in argv:
        out_dir = Path(argv[argv.index("--output_dir") + 1])
        assert list(out_dir.rglob("summary.json")), f"{cmd.source}: no run record (summary.json) in {out_dir}"
    if script == "preprocess" and argv[0] in ("nifti", "legacy", "dummy") and "--shard" not in argv:
        # (one shard of a job array may hold no run: its report is what it promises)
        out_dir = Path(argv[argv.index("--output_dir") + 1])
        assert list(out_dir.rglob("*.h5")), f"{cmd.source}: no HDF5 run in {out_dir}"


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------

ALL = doc_commands() + help_commands()


def _kind(cmd: DocCommand) -> str:
    env, words = cmd.env_and_argv()
    head = words[0] if words else ""
    if head in ("pip", "source") or "setup_env.sh" in cmd.text or cmd.text.startswith("python -m venv"):
        return "install"
    if "-m pytest" in cmd.text:
        return "pytest"
    if head == "python" and len(words) > 1 and words[1].startswith("project/"):
        return "python"
    if head in ("sbatch", "qsub"):
        return "cluster"
    if head == "bash" or head == "for" or head.endswith("python") or head == "python":
        return "script"
    return "other"


def test_every_doc_command_is_found_and_known():
    """A new kind of command in the docs needs a rule here, not a silent pass."""
    kinds = {c.ident: _kind(c) for c in ALL}
    assert "other" not in kinds.values(), [k for k, v in kinds.items() if v == "other"]
    assert sum(v == "python" for v in kinds.values()) >= 15
    sources = {c.source.split(":")[0] for c in ALL}
    assert {"README.md", "ADDING_YOUR_DATASET.md", "sample_scripts/README.md",
            "sample_scripts/lab_server_smoke_test/README.md", "docs/data.md", "docs/training.md",
            "docs/own-data-cpu.md", "docs/cluster.md"} <= sources


PYTHON = [c for c in ALL if _kind(c) == "python"]
# main.py --dry_run resolves settings and reads nothing; preprocess.py --dry_run lists the runs.
DRY_RUN_PROMISE = re.compile(r"dry run: (nothing read, checked or written|.*would convert \d+ of "
                             r"\d+ runs .*nothing converted or written)")


@pytest.mark.parametrize("cmd", PYTHON, ids=lambda c: c.ident)
def test_python_command_runs(cmd, doc_world, capsys):
    output = check_python_command(cmd, doc_world, capsys)
    if "--dry_run" in cmd.text or "GPU" in cmd.marks:
        assert DRY_RUN_PROMISE.search(output), output[-2000:]


def test_gpu_commands_are_marked():
    """A command asking for a GPU or many nodes says so in the doc."""
    for cmd in ALL:
        asks_gpu = re.search(r"--accelerator gpu|deepspeed|--num_nodes [2-9]|sbatch|qsub", cmd.text)
        if asks_gpu:
            assert set(cmd.marks) & {"GPU", "cluster"}, f"{cmd.source}: {cmd.text[:80]} is not marked"


INSTALL = [c for c in ALL if _kind(c) == "install"]


@pytest.mark.parametrize("cmd", INSTALL, ids=lambda c: c.ident)
def test_install_lines_name_files_that_exist(cmd):
    """.ci/run runs the install on a clean clone; here: the files and flags they name exist."""
    env, words = cmd.env_and_argv()
    for word in words:
        if word.endswith((".txt", ".sh")) or word in (".",):
            assert (ROOT / word).exists(), f"{cmd.source}: {word} not found"
    if "setup_env.sh" in words:
        text = (ROOT / "setup_env.sh").read_text()
        for flag in [w for w in words if w.startswith("--")]:
            assert flag in text, f"setup_env.sh does not know {flag}"
        assert "NEUROMAMBA_TORCH" in text or "NEUROMAMBA_TORCH" not in env
    if words[:2] == ["pip", "install"] and "-e" in words:
        assert (ROOT / "pyproject.toml").exists()


def test_pytest_lines_use_registered_markers():
    text = (ROOT / "pytest.ini").read_text()
    for cmd in ALL:
        if _kind(cmd) == "pytest":
            for marker in re.findall(r"\s-m\s+\"?(?:not\s+)?(\w+)", cmd.text.replace("-m pytest", "")):
                assert f"{marker}:" in text, f"{cmd.source}: marker {marker} is not registered"


MARKED_SCRIPTS = [c for c in ALL if _kind(c) in ("cluster", "script") and c.marks]


def _script_of(words):
    for w in words:
        if w.endswith((".sh", ".slurm", ".pbs")):
            return w
    return None


def _exports(words) -> dict:
    """``sbatch --export=ALL,A=b,C=d`` -> {A: b, C: d}; ``sbatch --array=0-99`` -> the
    environment of that array's first task."""
    env = {}
    for w in words:
        array = re.match(r"^--array=(\d+)-(\d+)", w)
        if array:
            low, high = int(array.group(1)), int(array.group(2))
            env.update(SLURM_ARRAY_TASK_ID=str(low), SLURM_ARRAY_TASK_MIN=str(low),
                       SLURM_ARRAY_TASK_COUNT=str(high - low + 1))
        if w.startswith("--export="):
            for part in w.split("=", 1)[1].split(","):
                if "=" in part:
                    k, v = part.split("=", 1)
                    env[k] = v
    return env


@pytest.mark.parametrize("cmd", MARKED_SCRIPTS, ids=lambda c: c.ident)
def test_marked_script_parses_and_dry_runs(cmd, doc_world):
    env, words = cmd.env_and_argv()
    script = _script_of(words)
    assert script and (ROOT / script).is_file(), f"{cmd.source}: no script in {cmd.text}"
    res = run_bash(["bash", "-n", str(ROOT / script)], {}, ROOT, 60)
    assert res.returncode == 0, res.stdout
    text = (ROOT / script).read_text()
    if "env.sh" not in text and "_finetune.sh" not in text:
        return  # not a main.py script (the GPU suite, for one): parsing is the check
    env = {**env, **_exports(words)}
    env = {k: doc_world["paths"].get(v.replace("$PWD/", ""), doc_world["paths"].get(v, v)) for k, v in env.items()}
    out = _fresh(doc_world, cmd.ident)
    res = run_bash(["bash", str(ROOT / script)], {**env, "DRY_RUN": "1", "OUT": str(out)}, ROOT, 300)
    assert res.returncode == 0, f"{cmd.text}\n{res.stdout[-3000:]}"
    assert DRY_RUN_PROMISE.search(res.stdout), res.stdout[-2000:]
    if "SLURM_ARRAY_TASK_ID" in env:  # the array's first task takes its own share
        count = env["SLURM_ARRAY_TASK_COUNT"]
        assert f"shard 1/{count} (from SLURM_ARRAY_TASK_ID)" in res.stdout, res.stdout[-2000:]
    no_traceback(res.stdout)


# --------------------------------------------------------------------------------------------
# The full set: scripts that train, benchmarks, the quickstart, every task script
# --------------------------------------------------------------------------------------------

UNMARKED_SCRIPTS = [c for c in ALL if _kind(c) == "script" and not c.marks]
BENCH_TINY = {"--runs": ["2"], "--frames": ["24"], "--repeats": ["1"], "--prep_frames": ["24"],
              "--seeds": ["1"], "--subjects": ["10"], "--epochs": ["1"], "--jobs": ["1"]}


@full_only
@pytest.mark.slow
@pytest.mark.parametrize("cmd", UNMARKED_SCRIPTS, ids=lambda c: c.ident)
def test_script_runs(cmd, doc_world):
    env, words = cmd.env_and_argv()
    out = _fresh(doc_world, cmd.ident)
    env = {k: doc_world["paths"].get(v, v) for k, v in env.items()}
    env.setdefault("OUT", str(out))
    if words[0].endswith("python") or words[0] == "python":
        words = [sys.executable, *words[1:]]
        if "benchmarks/" in words[1]:
            words = words[:2] + with_values(words[2:], {**BENCH_TINY, "--out": [str(out)]})
        res = run_bash(words, env, ROOT)
    else:
        res = run_bash(["bash", "-c", cmd.text], env, ROOT)
    assert res.returncode == 0, f"{cmd.source}: {cmd.text}\n{res.stdout[-3000:]}"
    no_traceback(res.stdout)
    if "slurm_a5000_dummy_smoke.sh" in cmd.text:  # the README quotes the figure the run prints
        quoted = re.search(r"prints about (\d+) %", (ROOT / "sample_scripts/lab_server_smoke_test/README.md").read_text())
        printed = re.search(r"tokens kept ([\d.]+)%", res.stdout)
        assert quoted and printed and abs(float(printed.group(1)) - float(quoted.group(1))) <= 3


TASK_SCRIPTS = sorted((ROOT / "sample_scripts" / "tasks").glob("*.sh"))
TASK_SCRIPTS = [p for p in TASK_SCRIPTS if p.name != "common.sh"]


@pytest.fixture(scope="session")
def task_out(tmp_path_factory):
    return tmp_path_factory.mktemp("tasks")  # one pretraining shared by every task script


@full_only
@pytest.mark.slow
@pytest.mark.parametrize("script", TASK_SCRIPTS, ids=lambda p: p.name)
def test_task_script_runs(script, task_out):
    res = run_bash(["bash", str(script)], {"OUT": str(task_out)}, ROOT)
    assert res.returncode == 0, f"{script.name}\n{res.stdout[-3000:]}"
    no_traceback(res.stdout)


def test_the_docs_site_builds_strictly(tmp_path):
    """mkdocs.yml's pages exist, every link between them resolves, the API pages' objects import
    (what .ci/run builds)."""
    pytest.importorskip("mkdocs")
    res = run_bash([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                   {"NO_MKDOCS_2_WARNING": "1"}, ROOT, 300)
    assert res.returncode == 0, res.stdout[-3000:]
    assert (tmp_path / "site" / "own-data-cpu" / "index.html").is_file()
