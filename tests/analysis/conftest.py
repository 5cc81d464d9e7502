"""Fixtures for the analysis tests (helpers live in analysis_helpers.py)."""
import pytest
import torch


@pytest.fixture
def tiny_released_checkpoint(tmp_path):
    from neuromamba.checkpoints import save_released_format
    from neuromamba.models import FMamba

    torch.manual_seed(0)
    model = FMamba(embed_dim=32, depth=2, d_state=8, headdim=32, img_size=(24, 24, 24, 4), chunk_size=64)
    return save_released_format(model, tmp_path / "tiny.pt"), model
