"""Shared test setup: the checkout's package for subprocesses too, seed everything, skip GPU tests without CUDA."""
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Subprocesses of the tests import the checkout's package too (pytest.ini's pythonpath is for
# this process only).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT / "project")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

# Without CUDA, Triton can only interpret: mamba_ssm's kernels then run on CPU tensors
# (tests/models/test_mamba2_fused_cpu.py). Triton decides when it is first imported (anything may
# import it, torch included), so the switch is set before any test runs. Only a forced
# NEUROMAMBA_MAMBA_BACKEND=fused reaches the kernels on CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests must not need an account or the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
