"""Integrated gradients: a planted region is where the attribution goes; maps land in the
original input space."""
import json

import nibabel as nib
import re

import numpy as np
import pytest
import torch

from analysis_helpers import run_script, save_lightning_like, tiny_module
from neuromamba.analysis.attribution import (
    brain_mean_baseline,
    mass_in_region,
    subject_attribution,
)
from neuromamba.analysis.encoder import Encoder

S, T = 24, 4


def _planted_model(signal=3.0, seed=0):
    """A random tiny backbone + a linear head fitted (logistic regression on pooled features)
    to detect a brighter 6x6x6 region: a model that provably uses that region."""
    from sklearn.linear_model import LogisticRegression

    from neuromamba.models import FMamba, build_head
    from neuromamba.models.heads import mean_pool

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    brain = np.zeros((S, S, S), bool)
    brain[3:21, 3:21, 3:21] = True
    region = np.zeros_like(brain)
    region[12:18, 6:12, 6:12] = True  # exactly one spatial token

    def sample(label):
        x = rng.normal(size=(S, S, S, T))
        if label:
            x[region] += signal
        return np.where(brain[..., None], x, -5.0).astype(np.float32)

    model = FMamba(embed_dim=32, depth=2, d_state=8, headdim=32, img_size=(S, S, S, T), chunk_size=64,
                   background_removal="packed", pretraining=False).eval()
    y = np.arange(64) % 2
    x = torch.from_numpy(np.stack([sample(v) for v in y]))[:, None]
    with torch.no_grad():
        features = mean_pool(model(x)).numpy()
    clf = LogisticRegression(max_iter=5000).fit(features[:48], y[:48])
    head = build_head("linear", 32, 2)
    with torch.no_grad():
        w = torch.tensor(clf.coef_[0], dtype=torch.float32) / 2
        b = float(clf.intercept_[0]) / 2
        head.fc.weight.copy_(torch.stack([-w, w]))
        head.fc.bias.copy_(torch.tensor([-b, b]))
    encoder = Encoder(model=model, head=head, prompt=None, img_size=(S, S, S, T),
                      patch_size=(6, 6, 6, 2), input_scaling_method="znorm_minback",
                      task="classification", num_classes=2)
    return encoder, sample, brain, region, clf.score(features[48:], y[48:])


def test_attribution_concentrates_on_planted_region():
    encoder, sample, brain, region, accuracy = _planted_model()
    assert accuracy >= 0.75  # the model uses the region
    batches = [{"fmri": torch.from_numpy(sample(1))[None, None], "start": torch.tensor([0])}
               for _ in range(2)]
    result = subject_attribution(encoder, batches, target=1, n_steps=16, reduce="abs")
    inside, share = mass_in_region(result.volume_3d, region, brain)
    assert share == pytest.approx(1 / 27)
    assert inside > 2.5 * share
    # The region's token carries the largest mean attribution of all 4x4x4 spatial tokens.
    blocks = result.volume_3d.reshape(4, 6, 4, 6, 4, 6).mean(axis=(1, 3, 5))
    assert np.unravel_index(blocks.argmax(), blocks.shape) == (2, 1, 1)
    # Completeness: the attributions add up to F(x) - F(baseline).
    assert result.completeness_error < 1e-3
    # Nothing is attributed to the background (it equals the baseline).
    assert np.all(result.volume_3d[~brain] == 0)


def test_brain_mean_baseline_keeps_the_background_and_flattens_the_brain():
    x = torch.full((1, 1, 4, 4, 4, 2), -3.0)
    x[..., 1:3, 1:3, 1:3, :] = torch.arange(16, dtype=torch.float32).view(2, 2, 2, 2)
    x0 = brain_mean_baseline(x, "min")
    assert torch.all(x0[x == -3.0] == -3.0)
    assert torch.allclose(x0[x != -3.0], torch.tensor(7.5))


def _nifti(path, shape=(22, 26, 20), frames=9, seed=0):
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    brain = sum(((a - (n - 1) / 2) / (0.4 * n)) ** 2 for a, n in zip(axes, shape)) <= 1
    data = np.where(brain[..., None], np.round(800 + 50 * rng.normal(size=shape + (frames,))), 0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-22, -42, -14]  # brain centred near the MNI152 brain's
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return brain, affine


def test_attribute_cli_writes_maps_in_original_space(tmp_path, repo_root):
    module = tiny_module("classification", num_classes=2, extra=["--background_removal", "batch"])
    ckpt = save_lightning_like(module, tmp_path / "m.ckpt")
    brain, affine = _nifti(tmp_path / "sub-01_rest.nii.gz")
    res = run_script(repo_root, "attribute", "--checkpoint", ckpt,
                     "--nifti", tmp_path / "sub-01_rest.nii.gz", "--output_dir", tmp_path / "out",
                     "--four_d", "--n_steps", "4", "--device", "cpu", "--target", "1",
                     "--class_names", "F", "M")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "out" / "sub-01_rest_ig.json").read_text())
    assert summary["target_name"] == "M" and summary["num_clips"] == 2
    assert 0.0 <= summary["output"] <= 1.0  # p(M), shown in the PNG's title
    img = nib.load(summary["files"]["nifti"])
    assert img.shape == brain.shape
    np.testing.assert_allclose(img.affine, affine)
    vol = np.asarray(img.dataobj)
    assert np.all(vol[~brain] == 0) and vol[brain].sum() > 0  # aligned with the input's brain
    four = nib.load(summary["files"]["nifti_4d"])
    assert four.shape == brain.shape + (9,)
    frames = np.asarray(four.dataobj).sum(axis=(0, 1, 2))
    assert np.all(frames[:8] > 0) and frames[8] == 0  # clips cover frames 0-7 only
    with open(summary["files"]["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attribute_cli_dataset_subject_and_errors(tmp_path, repo_root):
    module = tiny_module("regression", target_mean=50.0, target_std=10.0)
    ckpt = save_lightning_like(module, tmp_path / "r.ckpt")
    base = ["--checkpoint", ckpt, "--output_dir", tmp_path / "out", "--n_steps", "2", "--device", "cpu",
            "--dataset_name", "Dummy", "--dummy_num_subjects", "4", "--dummy_num_frames", "4"]
    res = run_script(repo_root, "attribute", *base, "--subject", "dummy0001")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "out" / "dummy0001_run0_ig.json").read_text())
    assert summary["space"].startswith("model grid") and summary["num_clips"] == 1
    assert nib.load(summary["files"]["nifti"]).shape == (24, 24, 24)
    res = run_script(repo_root, "attribute", *base, "--subject", "nobody")
    assert res.returncode == 2 and "nobody" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_attribution_figure_has_the_fields_standard_look():
    """nilearn's stat map: orientation labels, mm cut coordinates, the stated threshold and the
    class name in the title, panels filling the figure."""
    from neuromamba.analysis.attribution_io import attribution_figure

    rng = np.random.default_rng(0)
    background = rng.uniform(0, 1, (20, 24, 20)).astype(np.float32)
    attribution = np.zeros_like(background)
    attribution[12, 10, 8] = 5.0
    attribution[3:6, 3:6, 3:6] = rng.uniform(0, 1, (3, 3, 3))
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (20, -30, -10)
    fig = attribution_figure(background, attribution, affine, "sub-01: integrated gradients for M")
    texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")) if t.get_text()]
    joined = " | ".join(texts)
    assert "integrated gradients for M" in joined
    assert "90th percentile" in joined and "|IG| >" in joined
    assert "(-4, -10, 6) mm" in joined  # the peak voxel (12, 10, 8) in world coordinates
    assert "integrated gradients (model output units)" in joined  # the colourbar says what it shows
    assert {"L", "R"} <= set(texts)  # orientation labels
    assert any(re.fullmatch(r"[xyz]=-?\d+", t) for t in texts)  # cut coordinates in mm
    assert len(fig.axes) >= 3


def test_png_title_gives_the_class_and_its_probability_and_the_underlay_is_the_raw_mean():
    """Under a demeaning input the scaled clips are flat, so the underlay is the run's mean
    image before scaling: the anatomy."""
    from neuromamba.analysis.attribute_cli import RunClips, attribution_title
    from neuromamba.analysis.attribution import SubjectAttribution
    from neuromamba.data.datasets import ClipDataset, ClipSpec, DummyReader, dummy_entries
    from neuromamba.data.dummy import DummyGenerator, DummySpec

    result = SubjectAttribution(np.zeros((2, 2, 2)), None, 1, 3, 0.0, 0.734, True)
    assert attribution_title("sub-01", "M", result) == \
        "sub-01: integrated gradients for M (p(M) = 0.73, mean of 3 clips)"
    value = SubjectAttribution(np.zeros((2, 2, 2)), None, 0, 1, 0.0, 61.25, False)
    assert "(predicted 61.2, mean of 1 clip)" in attribution_title("s", "the regression output", value)

    spec = DummySpec(num_subjects=3, img_size=(24, 24, 24), num_frames=8)
    generator = DummyGenerator(spec)
    reader = DummyReader(generator)
    entries = dummy_entries(spec)[:1]
    dataset = ClipDataset(entries, ClipSpec(sequence_length=4, scaling_method="voxel_demean"), reader)
    anatomy = RunClips("r", dataset, 8, None).anatomy()
    frames = generator.frames(entries[0].subject, entries[0].run, range(8))
    brain = generator.brain_mask(entries[0].subject, entries[0].run)
    np.testing.assert_allclose(anatomy[brain], frames.mean(0)[brain], rtol=1e-5)
    assert anatomy[brain].std() > 0.1 * abs(anatomy[brain].mean())  # contrast to look at
    clip = dataset[0]["fmri"][0].numpy()
    assert np.abs(clip.mean(-1)[brain]).max() < np.abs(anatomy[brain]).max()  # what the clip no longer shows


def test_a_mean_brain_baseline_on_a_demeaned_input_says_why_it_is_refused():
    from neuromamba.analysis.attribution import brain_mean_baseline

    x = torch.zeros(1, 1, 6, 6, 6, 4)
    x[0, 0, 1:5, 1:5, 1:5] = torch.tensor([1.0, -1.0, 2.0, -2.0])  # each voxel's mean over time is 0
    with pytest.raises(ValueError, match=r"as in every demeaned input .*use --baseline background"):
        brain_mean_baseline(x, "zero")


def test_maps_are_masked_to_the_runs_brain_and_say_what_was_removed():
    """Attribution PNGs showed hatching outside the brain (262k non-zero voxels outside the
    mask): the maps now hold the brain only, and the share removed is reported."""
    encoder, sample, brain, region, _ = _planted_model()
    stored = np.zeros_like(brain)
    stored[3:21, 3:21, 3:10] = True  # smaller than the signal; patches z 6-11 half inside it
    mask = torch.from_numpy(stored)[None]
    batches = [{"fmri": torch.from_numpy(sample(1))[None, None], "start": torch.tensor([0]),
                "brain_mask": mask}]
    result = subject_attribution(encoder, batches, target=1, n_steps=8, reduce="abs", num_frames=4)
    assert np.all(result.volume_3d[~stored] == 0) and np.all(result.volume_4d[~stored] == 0)
    assert np.abs(result.volume_3d[stored]).sum() > 0
    assert 0 < result.outside_brain_share < 1
