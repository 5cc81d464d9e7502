"""embed.py/predict.py/attribute.py with an --input_scaling_method other than the one the
checkpoint was trained on used to go on silently (main.py warns): the model read an input it
never learnt, in another clip layout when a static token is involved."""
import warnings

import pytest

from analysis_helpers import save_lightning_like, tiny_module
from neuromamba.analysis.encoder import load_encoder
from neuromamba.console import NeuroMambaWarning


def test_another_input_than_the_checkpoints_is_warned_about(tmp_path):
    path = save_lightning_like(tiny_module("classification"), tmp_path / "ft.ckpt")
    with pytest.warns(NeuroMambaWarning, match=r"--input_scaling_method voxel_demean_static: .*ft\.ckpt "
                                               r"was trained on znorm_minback"):
        encoder = load_encoder(path, input_scaling_method="voxel_demean_static")
    assert encoder.input_scaling_method == "voxel_demean_static"  # the user's choice still holds
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeuroMambaWarning)  # the same input, or none given: silent
        assert load_encoder(path, input_scaling_method="znorm_minback").input_scaling_method == "znorm_minback"
        assert load_encoder(path).input_scaling_method == "znorm_minback"
