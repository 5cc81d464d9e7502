"""Every flag of every entry script says what it does; no help shows "(default: None)"."""
import argparse
import importlib.util
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1] / "project"
SCRIPTS = ("preprocess", "check_flops", "embed", "predict", "attribute", "baseline")


def _parsers():
    from neuromamba.cli import build_parser

    found = [("main", build_parser())]
    for name in SCRIPTS:
        spec = importlib.util.spec_from_file_location(f"_help_{name}", PROJECT / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.append((name, module.build_parser()))
    for name, parser in list(found):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


@pytest.mark.parametrize("name, parser", _parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_flag_has_help(name, parser):
    missing = [a.option_strings or [a.dest] for a in parser._actions
               if a.dest != "help" and not isinstance(a, argparse._SubParsersAction)
               and a.help != argparse.SUPPRESS and not a.help]
    assert not missing, f"{name}: flags without help: {missing}"
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text, name


def test_downstream_task_examples_match_the_docs():
    from neuromamba.cli import build_parser

    text = build_parser().format_help()
    assert "intelligence" in text and "int_total" not in text
