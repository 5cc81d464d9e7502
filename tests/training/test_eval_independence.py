"""A clip's evaluation never depends on its batch-mates: test metrics are the same for every
eval batch size, equal predict.py's per-subject outputs, and the brain tokens come from the
stored mask, not from the values."""
import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from neuromamba.cli import parse_args, parse_run
from neuromamba.data.preprocess_runner import PreprocessOptions, preprocess_folder
from neuromamba.training.runner import run

TINY = ["--embed_dim", "16", "--depth", "1", "--d_state", "8", "--headdim", "16",
        "--img_size", "24", "24", "24", "4", "--accelerator", "cpu", "--no_progress_bar",
        "--calc_loss_without_background", "--seed", "5", "--num_sanity_val_steps", "0"]
AFFINE = np.array([[2.0, 0, 0, -24], [0, 2, 0, -50], [0, 0, 2, -20], [0, 0, 0, 1]])


def _brain(seed: int) -> np.ndarray:
    """Brains of different sizes and places, so a batch-wide token mask differs from each
    clip's own."""
    rng = np.random.default_rng(seed)
    data = np.zeros((30, 34, 28, 8), np.float32)
    lo = rng.integers(6, 10, 3)
    hi = lo + rng.integers(6, 13, 3)
    data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = np.round(
        rng.uniform(400, 900, tuple(hi - lo) + (8,)))
    return data


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    (root / "nifti").mkdir()
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "label"])
        for i in range(12):
            nib.save(nib.Nifti1Image(_brain(i), AFFINE), str(root / "nifti" / f"s{i:02d}_rest.nii.gz"))
            writer.writerow([f"s{i:02d}", i % 2])
    summary = preprocess_folder(root / "nifti", root / "h5",
                                PreprocessOptions(target_shape=(24, 24, 24), min_frames=4), progress=False)
    assert summary.count("done") == 12
    return root


def _predictions(run_dir):
    with open(Path(run_dir) / "predictions_test.csv") as f:
        return {r["subject"]: float(r["prob_class1"]) for r in csv.DictReader(f)}


def _flags(cohort, out, name, *extra):
    return TINY + ["--dataset_name", "CSV", "--image_path", str(cohort / "h5"), "--label_csv",
                   str(cohort / "labels.csv"), "--downstream_task", "label", "--output_dir", str(out),
                   "--run_name", name, "--train_split", "0.5", "--val_split", "0.2", *extra]


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run(parse_run(_flags(cohort, out, "fit", "--max_epochs", "1", "--batch_size", "3",
                                   "--eval_batch_size", "1", "--learning_rate", "1e-2")))
    best = next((Path(result["run_dir"]) / "checkpoints").glob("best-*.ckpt"))
    return out, best, _predictions(result["run_dir"])


def test_test_metrics_do_not_depend_on_eval_batch_size(cohort, trained):
    out, best, reference = trained
    assert len(reference) >= 3
    for size in (2, 5):
        result = run(parse_run(_flags(cohort, out, f"eval{size}", "--test_only", "--test_ckpt_path", str(best),
                                       "--eval_batch_size", str(size))))
        got = _predictions(result["run_dir"])
        assert set(got) == set(reference)  # the checkpoint run's own split is reused
        for subject, prob in reference.items():
            assert got[subject] == pytest.approx(prob, abs=1e-5), (size, subject)


def test_the_original_batch_rule_does_depend_on_batch_mates(cohort, trained):
    """Why the default changed: with --eval_background_removal batch the outputs move."""
    out, best, reference = trained
    result = run(parse_run(_flags(cohort, out, "batchrule", "--test_only", "--test_ckpt_path", str(best),
                                   "--eval_batch_size", "5", "--eval_background_removal", "batch")))
    got = _predictions(result["run_dir"])
    assert max(abs(got[s] - reference[s]) for s in reference) > 1e-4


def test_test_metrics_equal_predict_py(cohort, trained, capsys):
    out, best, reference = trained
    import predict

    for subject, prob in reference.items():
        assert predict.main(["--checkpoint", str(best), "--nifti", str(cohort / "nifti" / f"{subject}_rest.nii.gz"),
                             "--json", "--device", "cpu", "--batch_size", "3"]) == 0
        output = json.loads(capsys.readouterr().out)
        assert output["probabilities"]["1"] == pytest.approx(prob, abs=1e-5), subject


def test_test_only_reuses_the_checkpoint_split_and_clip_settings(cohort, trained):
    out, best, reference = trained
    # another seed and split fractions would draw another split; --test_only keeps the run's
    result = run(parse_run(_flags(cohort, out, "seed", "--test_only", "--test_ckpt_path", str(best),
                                   "--seed", "99", "--img_size", "24", "24", "24", "2")))
    assert set(_predictions(result["run_dir"])) == set(reference)


def test_brain_values_below_the_minimum_keep_exactly_the_brain_tokens(tmp_path):
    """Signed data: brain voxels below the background's scaled value. The value rule would keep
    every token; the stored mask keeps the brain's."""
    from neuromamba.data.datasets import ClipDataset, ClipSpec, HDF5Reader, discover_hdf5_runs
    from neuromamba.models import FMamba

    data = _brain(1)
    data[data != 0] -= 600.0  # roughly demeaned: brain values on both sides of 0
    data[data == -600.0] = 1.0
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(data, AFFINE), str(tmp_path / "in" / "s_rest.nii.gz"))
    preprocess_folder(tmp_path / "in", tmp_path / "h5", PreprocessOptions(target_shape=(24, 24, 24),
                                                                          min_frames=4), progress=False)
    dataset = ClipDataset(discover_hdf5_runs(tmp_path / "h5"), ClipSpec(4), HDF5Reader())
    item = dataset[0]
    mask = item["brain_mask"]
    expected = mask.reshape(4, 6, 4, 6, 4, 6).any(5).any(3).any(1).sum().item() * 2  # x 2 time patches
    model = FMamba(embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4),
                   background_removal="packed", pretraining=False)
    with torch.no_grad():
        by_mask = model(item["fmri"][None], brain_mask=mask[None])
        by_value = model(item["fmri"][None])
    assert int(by_mask.lengths[0]) == expected < 128
    assert int(by_value.lengths[0]) == 128  # the old rule: every token looks like brain


def test_pretraining_eval_loss_is_per_clip_and_ignores_repeats_and_batch_mates():
    """Each clip's own next-token loss: equal whether a clip runs alone or with others, in the
    per-sample (packed) and the no-removal layouts; the epoch mean counts a repeated clip once
    (ZeRO-3 pads the last eval batches with repeats)."""
    from neuromamba.models import FMamba
    from neuromamba.training.metrics import ClipRecords, mean_clip_loss

    torch.manual_seed(0)
    x = torch.randn(3, 1, 24, 24, 24, 4)
    x[:, :, :6] = -3.0  # background slabs of different sizes
    x[1, :, :12] = -3.0
    for removal in ("packed", "none"):
        model = FMamba(embed_dim=16, depth=1, d_state=8, headdim=16, img_size=(24, 24, 24, 4),
                       background_removal=removal).eval()
        with torch.no_grad():
            together = model.next_token_loss_per_sample(model(x))
            alone = torch.cat([model.next_token_loss_per_sample(model(x[i:i + 1])) for i in range(3)])
            torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
            single = model.next_token_loss(model(x[:1]))
            torch.testing.assert_close(together[0], single, rtol=1e-5, atol=1e-6)
    records = ClipRecords()
    for s, loss in (("a", 1.0), ("b", 3.0), ("a", 1.0)):  # the third is a pad repeat
        records.add([s], ["r"], [0], torch.tensor([[loss]]), torch.tensor([loss]), torch.tensor([loss]))
    assert mean_clip_loss(records) == 2.0
