"""The resolved run is one typed, frozen object built from the run's record: its views agree with
the record, a recorded change rebuilds them all, and the record's copy of the spec is the spec's."""
import dataclasses

import pytest

from neuromamba.cli import parse_run
from neuromamba.run_config import RunConfig

FLAGS = ["--downstream_task", "sex", "--embed_dim", "16", "--depth", "1", "--img_size", "24", "24", "24", "8",
         "--recipe", "tuned", "--accelerator", "cpu", "--devices", "2", "--batch_size", "3",
         "--limit_val_batches", "0.5", "--monitor", "auroc"]


def test_the_typed_views_read_the_record_once():
    run = parse_run(FLAGS)
    assert run.task.task == "classification" and run.task.description == "classification of sex"
    assert run.hardware.runs_on_cpu and run.hardware.processes == 2 and run.hardware.processes_sharing_memory == 2
    assert run.trainer.batch_size == 3 and run.trainer.limits == {"limit_val_batches": 0.5}
    assert run.spec.input.img_size == (24, 24, 24, 8) and run.spec.model.img_size == (24, 24, 24, 10)
    assert run.record["spec"] == run.spec.as_dict()  # one spec, not two copies
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.trainer.batch_size = 8


def test_a_recorded_change_rebuilds_every_view():
    run = parse_run(FLAGS)
    grid = {"shape": [24, 24, 24], "voxel_size": [4.0] * 3, "affine": [1.0] * 16}
    later = run.with_record(data_grid=grid, batch_size=5)
    assert later.spec.input.data_grid == grid and later.record["spec"]["input"]["data_grid"] == grid
    assert later.trainer.batch_size == 5 and run.trainer.batch_size == 3  # the first is unchanged
    assert later.context is run.context


def test_a_record_without_a_setting_is_refused_in_one_line():
    record = dict(parse_run(FLAGS).record)
    del record["strategy"]
    with pytest.raises(ValueError, match="without 'strategy'"):
        RunConfig.from_record(record)
