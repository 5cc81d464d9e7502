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
    sys.path.insert(0, PROJECT)
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
