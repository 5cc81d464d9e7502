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
    # Dummy runs of the default length (for the run-mean inputs: the shortest safe for pretraining)
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 6), pretraining=True, dummy_num_subjects=6,
                        input_scaling_method=method, patch_frames=2)
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


def _loader_batches(dm, split, batch_size, workers):
    dm.num_workers = workers
    return list(dm._loader(dm.datasets[split], batch_size))


@pytest.mark.parametrize("method", ["znorm_minback", "voxel_demean_static"])
def test_workers_read_into_reused_shared_buffers_and_deliver_the_same_clips(method):
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), downstream_task="sex", dummy_num_subjects=8,
                        dummy_num_frames=16, input_scaling_method=method, train_split=0.5, val_split=0.3)
    dm.setup("fit")
    in_process = [dm.on_after_batch_transfer(b, 0) for b in _loader_batches(dm, "val", 3, 0)]
    dm.num_workers = 1
    slots = set()
    for expected, stored in zip(in_process, dm._loader(dm.datasets["val"], 3)):
        assert type(stored).__name__ == "StoredBatch" and stored["fmri"].is_shared()
        slots.add(stored.slot)
        got = dm.on_after_batch_transfer(stored, 0)
        assert type(got) is dict and torch.equal(got["fmri"], expected["fmri"])
        assert got["subject"] == expected["subject"] and torch.equal(got["target"], expected["target"])
        assert torch.equal(got["brain_mask"], expected["brain_mask"])
    assert len(in_process) >= 2 and len(slots) == len(in_process)  # one slot per batch in flight


def test_a_batch_whose_buffer_was_reused_is_refused(monkeypatch):
    from neuromamba.data import clip_buffers

    monkeypatch.setattr(clip_buffers, "SLOTS", 2)
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), pretraining=True, dummy_num_subjects=8,
                        dummy_num_frames=16, num_workers=1)
    dm.setup("fit")
    batches = iter(dm._loader(dm.datasets["train"], 1))
    held = next(batches)  # kept while the worker goes on: its slot comes round again
    for _ in range(4):
        next(batches)
    with pytest.raises(RuntimeError, match="rewrote a clip buffer before the batch in it was used"):
        dm.on_after_batch_transfer(held, 0)
    with pytest.raises(RuntimeError, match="rewrote a clip buffer"):
        held.to("meta")  # a copy to a device is checked the same way


def test_runs_stored_in_fp16_and_float32_batch_together_as_float32(tmp_path):
    from neuromamba.data.clip_buffers import collate_clips

    items = [{"fmri": torch.zeros(2, 3, 3, 3, dtype=torch.float16), "start": torch.tensor(0)},
             {"fmri": torch.ones(2, 3, 3, 3, dtype=torch.float32), "start": torch.tensor(2)}]
    batch = collate_clips(items)
    assert batch["fmri"].dtype == torch.float32 and batch["fmri"][1].eq(1).all()
