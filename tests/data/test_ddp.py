"""Two CPU ranks (gloo): same split on both, rank 0 writes it, evaluation clips not duplicated."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

PROJECT = str(Path(__file__).resolve().parents[2] / "project")


def _worker(rank, world, port, out_dir, result_dir):
    from neuromamba.data.datamodule import FMRIDataModule
    from neuromamba.data.samplers import UnpaddedDistributedSampler

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dm = FMRIDataModule("Dummy", img_size=(8, 8, 8, 2), dummy_num_subjects=12,
                            dummy_num_frames=5, stride_between_seq=0.5,  # every window
                            downstream_task="sex", output_dir=out_dir,
                            batch_size=2, seed=7)
        dm.setup()
        val = dm.val_dataloader()
        assert isinstance(val.sampler, UnpaddedDistributedSampler)
        seen = [(s, int(st)) for b in val for s, st in zip(b["subject"], b["start"])]
        train = dm.train_dataloader()
        train.sampler.set_epoch(0)
        train_idx = list(train.sampler)
        Path(result_dir, f"{rank}.json").write_text(json.dumps(
            {"splits": dm.splits, "val": seen, "n_val": len(dm.datasets["val"]),
             "n_train": len(dm.datasets["train"]),
             "train": train_idx, "split_path": str(dm.split_path)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_share_the_split_and_split_eval_clips(tmp_path):
    port = 29500 + os.getpid() % 1000
    mp.spawn(_worker, args=(2, port, str(tmp_path / "out"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["splits"] == r1["splits"] and r0["split_path"] == r1["split_path"]
    assert Path(r0["split_path"]).exists()
    # every validation clip exactly once over the two ranks
    both = [tuple(x) for x in r0["val"] + r1["val"]]
    assert len(both) == len(set(both)) == r0["n_val"]
    # training: the ranks get disjoint halves of one shuffled epoch (40 clips, no padding)
    assert r0["n_train"] == 40
    assert set(r0["train"]).isdisjoint(r1["train"])
    assert sorted(r0["train"] + r1["train"]) == list(range(40))


def _eval_worker(rank, world, port, result_dir, equal):
    import numpy as np
    import torch

    from neuromamba.data.datamodule import FMRIDataModule
    from neuromamba.training.metrics import ClipRecords, aggregate_by_subject, gather_records, mean_clip_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dm = FMRIDataModule("Dummy", img_size=(8, 8, 8, 2), dummy_num_subjects=15, dummy_num_frames=10,
                            downstream_task="sex", batch_size=2, eval_batch_size=1, seed=3,
                            train_split=0.6, val_split=0.2, equal_eval_batches=equal,
                            output_dir=str(Path(result_dir) / f"out{int(equal)}"))
        dm.setup()
        records, batches = ClipRecords(), 0
        for batch in map(lambda b: dm.on_after_batch_transfer(b, 0), dm.val_dataloader()):
            batches += 1
            # a stand-in model output that depends only on the clip
            out = batch["fmri"].flatten(1).mean(1, keepdim=True).repeat(1, 2).softmax(-1)
            # a stand-in per-clip loss (pretraining records its per-clip losses the same way)
            records.add(batch["subject"], batch["run"], batch["start"], out, batch["target"],
                        batch["fmri"].flatten(1).std(1))
        gathered = gather_records(records)
        table = aggregate_by_subject(gathered)
        Path(result_dir, f"{int(equal)}_{rank}.json").write_text(json.dumps(
            {"batches": batches, "subjects": table.subjects, "outputs": np.asarray(table.outputs).tolist(),
             "clips": np.asarray(table.num_clips).tolist(), "n_val": len(dm.datasets["val"]),
             "loss": mean_clip_loss(gathered), "records": len(gathered)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_zero3_evaluation_gets_equal_batches_and_the_same_metrics(tmp_path):
    """Padding for ZeRO-3: both ranks run the same number of eval batches, and the subject
    table equals the unpadded one (the repeated clips are dropped)."""
    port = 29500 + (os.getpid() + 500) % 1000
    for equal in (False, True):
        mp.spawn(_eval_worker, args=(2, port + int(equal), str(tmp_path), equal), nprocs=2, join=True)
    plain = [json.loads((tmp_path / f"0_{r}.json").read_text()) for r in (0, 1)]
    padded = [json.loads((tmp_path / f"1_{r}.json").read_text()) for r in (0, 1)]
    assert plain[0]["n_val"] % 2 == 1  # an odd number of clips: unpadded ranks differ
    assert plain[0]["batches"] != plain[1]["batches"]
    assert padded[0]["batches"] == padded[1]["batches"]
    assert padded[0]["subjects"] == plain[0]["subjects"] and padded[0]["clips"] == plain[0]["clips"]
    assert padded[0]["outputs"] == plain[0]["outputs"]
    # the epoch loss (pretraining's val/test loss) counts the padded repeats once
    assert padded[0]["records"] > plain[0]["records"]
    assert padded[0]["loss"] == plain[0]["loss"] == padded[1]["loss"]
