"""Crop/pad from the brain bounding box, centred, recorded, and mapped back."""
import numpy as np
import pytest

from neuromamba.data.nifti import (CropPadRecord, apply_crop_pad, brain_bounding_box,
                                   original_index, plan_crop_pad, target_index, to_original_space)

from data_helpers import BRAIN, SHAPE, TARGET, brain_run


def test_brain_box_is_centred():
    data = brain_run()
    mask = np.any(data != 0, axis=-1)
    record = plan_crop_pad(mask, TARGET, np.eye(4))
    assert brain_bounding_box(mask) == ((5, 20), (8, 25), (4, 22))
    out = apply_crop_pad(data, record)
    assert out.shape == TARGET + (SHAPE[3],)
    box = brain_bounding_box(np.any(out != 0, axis=-1))
    for (lo, hi), size in zip(box, TARGET):
        margin_before, margin_after = lo, size - hi
        assert abs(margin_before - margin_after) <= 1  # centred (integer rounding)
    # No brain voxel lost, background stays 0.
    assert np.count_nonzero(out) == np.count_nonzero(data)
    assert out.sum() == pytest.approx(data.sum(), rel=1e-6)


def test_record_maps_voxels_both_ways():
    data = brain_run()
    record = plan_crop_pad(np.any(data != 0, axis=-1), TARGET, np.eye(4))
    out = apply_crop_pad(data, record)
    for orig in [(5, 8, 4), (19, 24, 21), (12, 15, 10)]:
        tgt = target_index(orig, record)
        assert original_index(tgt, record) == orig
        np.testing.assert_array_equal(out[tgt], data[orig])
    back = to_original_space(out, record)
    np.testing.assert_array_equal(back, data)  # nothing of the brain was cropped
    # A 3D map goes back too (attribution maps), background filled
    back3 = to_original_space(out[..., 0], record, fill=-1.0)
    assert back3.shape == SHAPE[:3]
    np.testing.assert_array_equal(back3[BRAIN], data[BRAIN][..., 0])


def test_target_affine_points_to_same_world_coordinates():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-30, -40, -20]
    data = brain_run()
    record = plan_crop_pad(np.any(data != 0, axis=-1), TARGET, affine)
    orig = np.array([7, 9, 11])
    tgt = np.array(target_index(orig, record))
    world_orig = affine @ np.append(orig, 1)
    world_tgt = record.target_affine @ np.append(tgt, 1)
    np.testing.assert_allclose(world_orig, world_tgt)


def test_record_json_round_trip():
    data = brain_run()
    record = plan_crop_pad(np.any(data != 0, axis=-1), TARGET, np.eye(4))
    assert CropPadRecord.from_json(record.to_json()) == record


def test_brain_larger_than_target_is_a_clear_error():
    data = brain_run()
    mask = np.any(data != 0, axis=-1)
    with pytest.raises(ValueError, match="does not fit the target grid.*--allow_crop_brain"):
        plan_crop_pad(mask, (16, 16, 16), np.eye(4), path="x.nii.gz")
    record = plan_crop_pad(mask, (16, 16, 16), np.eye(4), allow_crop_brain=True)
    out = apply_crop_pad(data, record)
    assert out.shape[:3] == (16, 16, 16)
    # the centre voxel of the brain box survives the crop at the grid centre
    centre = (12, 16, 13)
    np.testing.assert_array_equal(out[target_index(centre, record)], data[centre])
