"""The package and its house: it installs with pip and imports from anywhere, the console
command dispatches to the same parsers as the scripts, no room imports in a circle or back
up a floor, and nothing reaches the code through sys.path.insert."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "project" / "neuromamba"
# Rooms from the bottom floor up: a room may import only from its own floor or below.
FLOORS = [
    {"paper", "fileio", "console", "allocator", "flag_help", "processes"},
    {"models"},
    {"checkpoints", "memory", "machine"},
    {"data"},
    {"spec"},
    {"run_config"},
    {"run_settings"},
    {"training"},
    {"analysis"},
    {"cli", "commands", "__main__"},
]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "neuromamba"


def _room_imports() -> dict:
    """{room: {room it imports: [module that does]}} over every import statement, lazy ones too."""
    edges: dict = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.with_suffix("").relative_to(PACKAGE.parent)
        module = ".".join(rel.parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
                names = [".".join(base + [node.module] if node.module else base) if node.level else node.module or ""]
            else:
                continue
            for name in names:
                if name.startswith("neuromamba.") and _room(name) != _room(module):
                    edges.setdefault(_room(module), {}).setdefault(_room(name), []).append(module)
    return edges


def test_no_room_imports_back_up_a_floor_or_in_a_circle():
    floor = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
    edges = _room_imports()
    unknown = sorted({r for r in edges} | {t for e in edges.values() for t in e}) 
    unknown = [r for r in unknown if r not in floor and r != "neuromamba"]
    assert not unknown, f"rooms without a floor: {unknown} (add them to FLOORS)"
    upward = [f"{src} -> {dst} ({', '.join(sorted(set(mods)))})" for src, targets in edges.items()
              if src in floor for dst, mods in targets.items() if floor[dst] > floor[src]]
    assert not upward, upward
    circles = [(a, b) for a, t in edges.items() for b in t if a in edges.get(b, {})]
    assert not circles, circles


def test_below_the_command_line_nothing_reads_flags():
    """models/, data/ and training/ read typed objects (run_config.RunConfig, spec.RunSpec),
    never argparse's namespace: a flag is resolved once, above them."""
    found = []
    for room in ("models", "data", "training"):
        for path in (PACKAGE / room).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                imported = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(name.split(".")[0] == "argparse" for name in imported):
                    found.append(f"{path.relative_to(PACKAGE)}: imports argparse")
                if isinstance(node, (ast.Name, ast.Attribute)) and \
                        getattr(node, "id", getattr(node, "attr", None)) == "Namespace":
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: Namespace")
                if isinstance(node, (ast.FunctionDef, ast.Lambda)) and \
                        "args" in [a.arg for a in node.args.args]:  # the flags handed down
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: takes args")
    assert not found, found


def test_nothing_reaches_the_code_through_sys_path_insert():
    found = []
    for folder in ("project", "tests", "benchmarks", "sample_scripts"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".sh") and path.is_file() and "sys.path.insert" in path.read_text():
                found.append(str(path.relative_to(REPO)))
    found = [f for f in found if f != "tests/test_package.py"]  # this test names it
    assert not found, found


@pytest.mark.slow
def test_pip_installs_the_package_and_it_imports_from_anywhere(tmp_path):
    import shutil

    # Build from a copy: setuptools writes build/ into the source tree it installs from.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "project" / "neuromamba", source / "project" / "neuromamba",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=300,
                   capture_output=True, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    probe = ("import neuromamba, neuromamba.spec as s; print(neuromamba.__file__); "
             "print(s.load_recipe('tuned').values['clf_head_version']); "
             "from neuromamba.commands import COMMANDS; print(sorted(COMMANDS))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith(str(target)), out  # the installed copy, not the checkout
    assert out[1] == "attention"  # the recipes travel as package data
    assert out[2] == str(sorted(["attribute", "baseline", "embed", "flops", "predict", "preprocess", "train"]))
    assert (target / "bin" / "neuromamba").is_file()  # the console command


def test_the_console_command_runs_the_scripts_parsers(capsys):
    from neuromamba.commands import main

    assert main(["--help"]) == 0 and "flops" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0 and "--recipe" in capsys.readouterr().out
    assert main(["flops", "--embed_dim", "16", "--depth", "1", "--img_size", "24", "24", "24", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recipe paper:") and "C=16 depth=1" in out
    # the scripts are shims over the same functions
    import check_flops
    import main as main_script
    from neuromamba.commands import flops, train

    assert check_flops.build_parser is flops.build_parser and main_script.main is train.main
