"""The feed: workers deliver clips as stored; the model gets the same values as the NumPy
reference scaling gave in the workers before (to float32 rounding), for every input scaling."""
import numpy as np
import pytest
import torch

from neuromamba.data.datamodule import FMRIDataModule
from neuromamba.data.datasets import model_input
from neuromamba.data.scaling import SCALING_METHODS, scale_clip


@pytest.mark.parametrize("method", sorted(SCALING_METHODS))
def test_scaled_after_transfer_equals_the_reference(method):
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 6), pretraining=True, dummy_num_subjects=6,
                        dummy_num_frames=12, input_scaling_method=method, patch_frames=2)
    dm.setup("fit")
    stored = next(iter(dm._loader(dm.datasets["train"], 3)))
    assert stored["fmri"].dim() == 5 and stored["fmri"].shape[1] == dm.clip_spec.sequence_length
    got = dm.on_after_batch_transfer(dict(stored), 0)["fmri"]
    part = dm.datasets["train"].datasets[0]
    spec = part.spec
    for b in range(got.shape[0]):
        entry = next(e for e in part.entries if e.subject == stored["subject"][b])
        start = int(stored["start"][b])
        raw = part.reader.frames(entry, slice(start, start + spec.sequence_length))
        voxel = part.reader.voxel_stats(entry) if SCALING_METHODS[method].voxel_stats else None
        reference = scale_clip(np.moveaxis(raw.astype(np.float32), 0, -1).copy(),
                               part.reader.stats(entry), method, voxel, spec.static_frames)
        assert got[b, 0].shape == reference.shape
        np.testing.assert_allclose(got[b, 0].numpy(), reference, rtol=1e-6, atol=1e-6)
    if SCALING_METHODS[method].static_token:
        assert spec.static_frames == 2 and got.shape[-1] == 2 + spec.sequence_length


def test_a_non_finite_clip_is_refused_by_name():
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), pretraining=True, dummy_num_subjects=6,
                        dummy_num_frames=8)
    dm.setup("fit")
    stored = next(iter(dm._loader(dm.datasets["train"], 2)))
    stored["fmri"][1, 0, 5, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=rf"subject {stored['subject'][1]}, run run0: non-finite .* "
                                         rf"frame {int(stored['start'][1])}"):
        model_input(stored, dm.clip_spec)
