"""The DataModule: batch contract, labels, splits, samplers, multi-cohort, workers."""
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from neuromamba.data.datamodule import FMRIDataModule
from neuromamba.data.dummy import DummySpec, regression_targets, write_dummy_runs
from neuromamba.data.samplers import (DistributedWeightedSampler, UnpaddedDistributedSampler,
                                      cohort_weights)
from neuromamba.data.windows import clip_starts

SMALL = dict(img_size=(12, 12, 12, 4), dummy_num_subjects=10, dummy_num_frames=12, batch_size=3)


def test_dummy_batch_contract(tmp_path):
    dm = FMRIDataModule("Dummy", downstream_task="sex", output_dir=tmp_path, **SMALL)
    dm.setup()
    stored = next(iter(dm.train_dataloader()))
    # The workers deliver the clips as stored (time first, the stored dtype) ...
    assert stored["fmri"].shape == (3, 4, 12, 12, 12) and stored["fmri"].dtype == torch.float32
    assert {"scale_offset", "scale_factor"} <= set(stored)
    # ... and the model gets them scaled, time last, after the transfer (Lightning's hook)
    batch = dm.on_after_batch_transfer(stored, 0)
    assert batch["fmri"].shape == (3, 1, 12, 12, 12, 4) and batch["fmri"].dtype == torch.float32
    assert "scale_offset" not in batch
    assert batch["target"].dtype == torch.int64 and batch["start"].dtype == torch.int64
    assert isinstance(batch["subject"], list) and isinstance(batch["run"], list)
    assert dm.num_classes == 2
    assert dm.split_path == tmp_path / "splits" / "split_Dummy_seed1234.txt"
    assert dm.split_path.exists()
    assert (tmp_path / "label_classes.json").exists()
    assert sorted(sum(dm.splits.values(), [])) == [f"dummy{i:04d}" for i in range(10)]
    test_items = [dm.datasets["test"][i] for i in range(len(dm.datasets["test"]))]
    assert dm.clip_subjects("test") == [it["subject"] for it in test_items]
    assert dm.clip_targets("test") == [it["target"].item() for it in test_items]


def test_dummy_is_deterministic_and_subjects_differ():
    a = FMRIDataModule("Dummy", downstream_task="sex", input_scaling_method="znorm_minback", **SMALL)
    b = FMRIDataModule("Dummy", downstream_task="sex", input_scaling_method="znorm_minback", **SMALL)
    a.setup(), b.setup()
    def item(dm, i):  # one clip as the model gets it
        return dm.on_after_batch_transfer(default_collate([dm.datasets["train"][i]]), 0)

    x, y = item(a, 3), item(b, 3)
    assert x["subject"] == y["subject"] and torch.equal(x["fmri"], y["fmri"])
    other = next(it for it in (item(a, i) for i in range(len(a.datasets["train"])))
                 if it["subject"] != x["subject"])
    assert not torch.equal(other["fmri"], x["fmri"])
    # brain-shaped: background (scaled raw 0) is the volume minimum, brain fills a good part
    vol = x["fmri"][0, 0, ..., 0]
    background = vol == vol.min()
    assert 0.4 < background.float().mean() < 0.9 and background[0, 0, 0]


def test_strides_reach_the_dataset():
    # clips of 4 frames every 2nd frame (span 7), starts 0.375 clip lengths = 3 frames apart
    dm = FMRIDataModule("Dummy", stride_within_seq=2, stride_between_seq=0.375, **SMALL)
    dm.setup()
    per_run = clip_starts(12, 4, 2, 0.375)
    assert per_run == [0, 3]
    assert len(dm.datasets["train"]) == len(dm.splits["train"]) * len(per_run)
    starts = sorted({dm.datasets["train"][i]["start"].item() for i in range(4)})
    assert starts == [0, 3]


def test_eval_loaders_keep_every_clip():
    dm = FMRIDataModule("Dummy", eval_batch_size=4, **SMALL)  # pretraining style, target 0
    dm.setup()
    assert len(dm.datasets["val"]) % 4 != 0  # a last partial batch exists and must be kept
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        n = sum(len(b["subject"]) for b in loader)
        assert n == len(dm.datasets[split])
        assert loader.drop_last is False
    assert dm.train_dataloader().drop_last is False


def test_hdf5_with_label_csv_excludes_unlabelled(tmp_path):
    spec = DummySpec(num_subjects=8, img_size=(12, 12, 12), num_frames=8, seed=3)
    write_dummy_runs(tmp_path / "h5", spec)
    labels = (tmp_path / "h5" / "labels.csv").read_text().splitlines()
    (tmp_path / "labels.csv").write_text("\n".join(labels[:-2]) + "\n")  # last 2 unlabelled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = FMRIDataModule("CSV", image_path=tmp_path / "h5", label_csv=tmp_path / "labels.csv",
                            target_column="label", img_size=(12, 12, 12, 4), num_workers=2,
                            output_dir=tmp_path / "out", batch_size=2)
        dm.setup()
    lines = [str(w.message) for w in caught if "no label" in str(w.message)]
    assert len(lines) == 1 and lines[0].startswith("2 of 8 CSV subjects have no label")
    used = {s for split in ("train", "val", "test") for s in dm.datasets[split].datasets[0].clip_subjects()}
    assert used.isdisjoint({"dummy0006", "dummy0007"})
    seen = [b for b in dm.train_dataloader()]  # forked workers open their own handles
    assert sum(len(b["subject"]) for b in seen) == len(dm.datasets["train"])
    assert all(torch.isfinite(dm.on_after_batch_transfer(b, 0)["fmri"]).all() for b in seen)


def test_regression_target_stats_use_the_train_split_only():
    dm = FMRIDataModule("Dummy", downstream_task="age", downstream_task_type="regression", **SMALL)
    dm.setup()
    assert dm.num_classes is None
    ages = regression_targets(DummySpec(**dm.dummy_spec_kwargs))
    train = [ages[(s, "run0")] for s in dm.splits["train"]]
    mean, std = dm.train_target_stats()
    assert mean == pytest.approx(np.mean(train)) and std == pytest.approx(np.std(train))
    item = dm.datasets["val"][0]
    assert item["target"].dtype == torch.float32
    assert item["target"].item() == pytest.approx(ages[(item["subject"], "run0")], rel=1e-6)


def test_run_level_labels_for_task_state():
    dm = FMRIDataModule("Dummy", downstream_task="state", dummy_num_runs=2,
                        dummy_label_level="run", **SMALL)
    dm.setup()
    ds = dm.datasets["train"]
    per_run = {}
    for i in range(len(ds)):
        item = ds[i]
        per_run.setdefault((item["subject"], item["run"]), set()).add(item["target"].item())
    assert all(len(v) == 1 for v in per_run.values())
    for s in dm.splits["train"]:  # the two runs of a subject have different states
        assert per_run[(s, "run0")] != per_run[(s, "run1")]


def test_unpadded_sampler_covers_each_clip_once():
    data = list(range(10))
    parts = [list(UnpaddedDistributedSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(parts, [])) == data
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [len(UnpaddedDistributedSampler(data, num_replicas=3, rank=r)) for r in range(3)] == [4, 3, 3]


def test_weighted_sampler_balances_cohorts_and_splits_ranks():
    cohorts = [0] * 90 + [1] * 10
    weights = cohort_weights(cohorts, "uniform")
    assert cohort_weights(cohorts, "proportional") is None
    ranks = [DistributedWeightedSampler(list(range(100)), weights, num_replicas=2, rank=r, seed=5)
             for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    draws = [list(s) for s in ranks]
    assert len(draws[0]) == len(draws[1]) == 50
    share = np.mean([cohorts[i] for d in draws for i in d])
    assert 0.35 < share < 0.65  # ~half from the small cohort, instead of 10 %
    ranks[0].set_epoch(2)
    assert list(ranks[0]) != draws[0]


def test_multi_cohort_pretraining(tmp_path):
    for name, n in (("a", 9), ("b", 3)):
        write_dummy_runs(tmp_path / name, DummySpec(num_subjects=n, img_size=(12, 12, 12),
                                                    num_frames=4, seed=len(name) + n))
    dm = FMRIDataModule(["HCP", "UKB"], image_path=[tmp_path / "a", tmp_path / "b"],
                        img_size=(12, 12, 12, 4), pretraining=True, cohort_sampling="uniform",
                        output_dir=tmp_path / "out", batch_size=4)
    dm.setup()
    assert all(s.split(":")[0] in ("HCP", "UKB") for s in sum(dm.splits.values(), []))
    for split in ("train", "val", "test"):  # every cohort is in every split
        assert {s.split(":")[0] for s in dm.splits[split]} == {"HCP", "UKB"}
    assert dm.split_path.exists()
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, torch.utils.data.WeightedRandomSampler)
    batch = next(iter(loader))
    assert batch["target"].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="same length"):
        FMRIDataModule(["HCP", "UKB", "ABCD"], image_path=[tmp_path / "a", tmp_path / "b"])


def test_multi_cohort_with_the_dummy_cohort(tmp_path):
    """The Dummy generator and each cohort's labels see the cohort's own subject ids; only the
    ids handed out (splits, batches) carry the "{cohort}:" prefix."""
    from neuromamba.data.dummy import class_labels

    write_dummy_runs(tmp_path / "h5", DummySpec(num_subjects=6, img_size=(12, 12, 12),
                                                num_frames=8, seed=5))
    common = dict(img_size=(12, 12, 12, 4), dummy_num_subjects=10, dummy_num_frames=8,
                  batch_size=4)
    dm = FMRIDataModule(["Dummy", "HCP"], image_path=[None, tmp_path / "h5"], pretraining=True,
                        **common)
    dm.setup()
    cohort_of = {s: s.split(":")[0] for split in dm.splits.values() for s in split}
    assert sorted(cohort_of) == sorted([f"Dummy:dummy{i:04d}" for i in range(10)]
                                       + [f"HCP:dummy{i:04d}" for i in range(6)])
    # 2 non-overlapping 4-frame clips per 8-frame run, for every subject of both cohorts
    clips = [s for split in ("train", "val", "test") for s in dm.clip_subjects(split)]
    assert sorted(clips) == sorted(2 * list(cohort_of))
    items = [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    assert {it["subject"].split(":")[0] for it in items} == {"Dummy", "HCP"}
    assert dm.clip_subjects("train") == [it["subject"] for it in items]
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["fmri"].shape == (4, 1, 12, 12, 12, 4)
    assert all(s in cohort_of for s in batch["subject"])

    # Fine-tuning: each cohort's clips get that cohort's labels.
    labelled = FMRIDataModule(["Dummy", "CSV"], image_path=[None, tmp_path / "h5"],
                              label_csv=[None, tmp_path / "h5" / "labels.csv"],
                              target_column="label", **common)
    labelled.setup()
    dummy_truth = class_labels(DummySpec(num_subjects=10, img_size=(12, 12, 12), num_frames=8,
                                         seed=1234))
    csv_truth = class_labels(DummySpec(num_subjects=6, img_size=(12, 12, 12), num_frames=8,
                                       seed=5))
    truth = {**{f"Dummy:{s}": c for (s, _), c in dummy_truth.items()},
             **{f"CSV:{s}": c for (s, _), c in csv_truth.items()}}
    for split in ("train", "val", "test"):
        subjects, targets = labelled.clip_subjects(split), labelled.clip_targets(split)
        assert [truth[s] for s in subjects] == targets
    assert labelled.num_classes == 2


def test_bad_flags_are_clear():
    with pytest.raises(ValueError, match="--dataset_name 'Nope' is unknown"):
        FMRIDataModule("Nope")
    with pytest.raises(ValueError, match="--input_scaling_method"):
        FMRIDataModule("Dummy", input_scaling_method="zscore")
    with pytest.raises(ValueError, match="--image_path is required"):
        FMRIDataModule("HCP", downstream_task="sex").setup()


def test_dummy_cli_writes_a_folder_the_csv_dataset_reads(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(__file__).resolve().parents[2] / "project" / "preprocess.py"
    proc = subprocess.run([sys.executable, str(cli), "dummy", "--output_dir", str(tmp_path / "h5"),
                           "--num_subjects", "6", "--img_size", "12", "12", "12",
                           "--num_frames", "8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 6 runs" in proc.stdout
    check = subprocess.run([sys.executable, str(cli), "check", str(tmp_path / "h5"),
                            "--no_progress"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "6 good, 0 bad" in check.stdout
    dm = FMRIDataModule("CSV", image_path=tmp_path / "h5", label_csv=tmp_path / "h5" / "labels.csv",
                        target_column="label", img_size=(12, 12, 12, 4), batch_size=2)
    dm.setup()
    # 4 train subjects x 2 non-overlapping 4-frame clips of their 8 frames
    assert dm.num_classes == 2 and len(dm.datasets["train"]) == 4 * 2


def test_dummy_refuses_a_label_csv_it_would_ignore(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("subject,sex\ndummy0000,M\n")
    dm = FMRIDataModule("Dummy", label_csv=labels, downstream_task="sex", **SMALL)
    with pytest.raises(ValueError, match="carries its own planted labels, so --label_csv .* would be ignored"):
        dm.setup()


def test_a_one_class_training_split_is_refused_with_the_counts(tmp_path):
    import csv

    from neuromamba.data.dummy import DummySpec, write_dummy_runs

    write_dummy_runs(tmp_path / "h5", DummySpec(num_subjects=8, img_size=(24, 24, 24), num_frames=4, seed=1))
    subjects = sorted(p.name for p in (tmp_path / "h5").iterdir() if p.is_dir())
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "dx"])
        writer.writerows([[s, "A" if i < 5 else "B"] for i, s in enumerate(subjects)])
    split = tmp_path / "split.txt"
    split.write_text("\n".join(["train_subjects", *subjects[:4], "val_subjects", subjects[4], subjects[5],
                                "test_subjects", subjects[6], subjects[7]]) + "\n")
    dm = FMRIDataModule("CSV", image_path=str(tmp_path / "h5"), img_size=(24, 24, 24, 4),
                        label_csv=str(tmp_path / "labels.csv"), target_column="dx", downstream_task="dx",
                        split_file=str(split))
    with pytest.raises(ValueError, match=r"the train split holds a single class \(\{0: 4\} subjects"):
        dm.setup("fit")


def test_the_datamodule_is_built_from_the_input_spec_and_the_flags():
    from neuromamba.cli import parse_args

    args = parse_args(["--downstream_task", "sex", "--recipe", "tuned", "--img_size", "24", "24", "24", "6",
                       "--dummy_num_subjects", "7", "--batch_size", "3", "--stride_between_seq", "0.5"])
    from neuromamba.data.datamodule import DataOptions

    dm = FMRIDataModule.from_spec(args.spec["input"], args.spec["model"]["patch_size"][3],
                                  DataOptions.from_values(vars(args), output_dir=None))
    assert dm.clip_spec.scaling_method == "voxel_demean_static" and dm.clip_spec.static_frames == 2
    # --img_size T counts the frames read; the static token comes on top of them
    assert dm.clip_spec.sequence_length == 6 and dm.clip_spec.stride_between_seq == 0.5
    assert dm.batch_size == 3 and dm.img_size == (24, 24, 24, 6)


def test_data_options_name_every_data_setting_of_the_module():
    """The module reads a typed DataOptions (no namespace); its fields and the input spec's are
    together the module's arguments, so a new data flag cannot be dropped on the way."""
    import inspect
    from dataclasses import fields

    from neuromamba.data.datamodule import DataOptions

    params = set(inspect.signature(FMRIDataModule.__init__).parameters) - {"self"}
    assert {f.name for f in fields(DataOptions)} | set(FMRIDataModule.SPEC_FIELDS) | {"patch_frames"} == params
    options = DataOptions.from_values({"batch_size": 3, "not_a_data_flag": 1}, seed=7)
    assert (options.batch_size, options.seed, options.dataset_name) == (3, 7, "Dummy")
