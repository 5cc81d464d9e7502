"""Analytic FLOPs/params of FMamba: exact against the built model and a FLOP counter."""
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from analysis_helpers import run_script
from neuromamba.analysis.brain_masks import (
    batch_shared_token_mask,
    center_in_box,
    kept_tokens,
    mni152_voxel_mask,
    token_mask_from_voxels,
)
from neuromamba.models.flops import (
    FMambaFlopsConfig,
    Mamba2Dims,
    count_parameters,
    fmamba_forward_flops,
    group_terms,
    packed_forward_flops,
    ssd_scan_flops,
    ssd_scan_matmul_flops,
)
from neuromamba.analysis.flops_report import ORIGINAL_REDUCTION, token_lengths

TINY = dict(embed_dim=32, depth=2, d_state=8, headdim=32, img_size=(24, 24, 24, 4), chunk_size=16)


def test_parameter_counts_match_the_readme_variants():
    # SPEC §4 table: 1.4M / 3.1M / 5.4M with the 432-output layer.
    expected = {(128, 32, 128): 1_416_056, (192, 48, 192): 3_082_296, (256, 64, 256): 5_387_512}
    for (c, n, p), value in expected.items():
        assert count_parameters(FMambaFlopsConfig(embed_dim=c, d_state=n, headdim=p)) == value


@pytest.mark.parametrize("pretraining,head", [(True, None), (False, "linear"), (False, "mamba"),
                                              (False, "attention"), (False, "connectivity")])
def test_parameter_count_equals_built_model(pretraining, head):
    from neuromamba.models import FMamba, build_head

    cfg = FMambaFlopsConfig(**TINY, pretraining=pretraining, head=head, num_outputs=3)
    model = FMamba(**TINY, pretraining=pretraining)
    built = sum(p.numel() for p in model.parameters())
    if head:
        options = {"token_grid": cfg.grid} if head == "connectivity" else {}
        built += sum(p.numel() for p in build_head(head, 32, 3, **options).parameters())
    assert count_parameters(cfg) == built


def _count(model, x):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(x)
        model.output_layer(out.features)
    return {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("removal", ["none", "batch"])
def test_gemm_and_scan_matmuls_equal_flop_counter(removal):
    """GEMMs (patch projection, in_proj, out_proj, output layer) = aten.mm + aten.addmm; the
    four batched matmuls of the chunked scan = aten.bmm + aten.baddbmm, exactly (pure path)."""
    from neuromamba.models import FMamba

    model = FMamba(**TINY, background_removal=removal).eval()
    x = torch.full((2, 1, 24, 24, 24, 4), -3.0)  # background = the minimum (znorm_minback)
    x[:, :, 6:18, 6:12, 0:12] = torch.randn(2, 1, 12, 6, 12, 4).clamp(min=-2)  # 2x1x2 tokens
    counts = _count(model, x)
    cfg = FMambaFlopsConfig(**TINY)
    length = cfg.num_tokens if removal == "none" else 2 * 1 * 2 * 2
    terms = fmamba_forward_flops(cfg, length)
    gemm = group_terms(terms)["gemm"]
    assert counts.get("aten.mm", 0) + counts.get("aten.addmm", 0) == 2 * gemm
    scan_mm = cfg.depth * sum(ssd_scan_matmul_flops(length, cfg.mixer).values())
    assert counts.get("aten.bmm", 0) + counts.get("aten.baddbmm", 0) == 2 * scan_mm


def test_scan_formula_terms_by_hand():
    dims = Mamba2Dims(d_model=4, d_state=3, headdim=4, chunk_size=5)  # E=8, H=2, P=4, N=3
    t = ssd_scan_flops(7, dims)  # 2 chunks, padded length 10
    assert t["scan_cb"] == 2 * 10 * 5 * 3
    assert t["scan_intra"] == 3 * 10 * 5 * 2 + 2 * 10 * 5 * 2 * 4
    assert t["scan_states"] == 2 * 10 * 2 * 3 * 4 + 2 * 10 * 2
    assert t["scan_passing"] == 2 * 2 * 2 * 3 * 4
    assert t["scan_output"] == 2 * 10 * 2 * 3 * 4 + 10 * 2 * 4
    assert t["scan_skip"] == 2 * 10 * 2 * 4
    half = ssd_scan_flops(7, dims, causal_half=True)
    assert half["scan_cb"] == t["scan_cb"] // 2


def test_flops_linear_in_tokens_and_training_factor():
    cfg = FMambaFlopsConfig(embed_dim=256, d_state=64, headdim=256)
    full = sum(fmamba_forward_flops(cfg).values())
    half = sum(fmamba_forward_flops(cfg, cfg.num_tokens // 2).values())
    assert half / full == pytest.approx(0.5, rel=1e-3)  # chunk padding only
    # Medium, all tokens: 4.374e11 GEMM FLOPs per clip forward.
    assert group_terms(fmamba_forward_flops(cfg))["gemm"] == 40960 * 2 * (
        432 * 256 + 12 * (256 * 1154 + 512 * 256) + 256 * 432
    )


def test_packed_costs_equal_sum_of_samples_up_to_padding():
    cfg = FMambaFlopsConfig(**TINY)
    lengths = [16, 32]
    packed = sum(packed_forward_flops(cfg, lengths).values())
    separate = sum(sum(fmamba_forward_flops(cfg, n).values()) for n in lengths)
    assert packed == separate  # 16 + 32 = 3 chunks either way


def test_token_mask_any_voxel_rule_and_batch_or():
    voxels = np.zeros((12, 12, 12), bool)
    voxels[0, 0, 0] = True  # one voxel makes its token brain
    other = np.zeros_like(voxels)
    other[11, 11, 11] = True
    a, b = (token_mask_from_voxels(m, (6, 6, 6)) for m in (voxels, other))
    assert a.sum() == 1 and a[0, 0, 0]
    shared = batch_shared_token_mask([a, b])
    assert shared.sum() == 2
    assert kept_tokens(shared, time_tokens=10) == 20
    cfg = FMambaFlopsConfig(**{**TINY, "img_size": (12, 12, 12, 4)})
    assert token_lengths(cfg, [voxels, other], "batch") == [4, 4]
    assert token_lengths(cfg, [voxels, other], "packed") == [2, 2]


def test_center_in_box_crops_and_pads_symmetrically():
    m = np.zeros((10, 3, 4), bool)
    m[2:8, 1, 1:3] = True  # box 6 x 1 x 2
    out = center_in_box(m, (4, 3, 6))
    assert out.sum() == 4 * 1 * 2
    assert out[:, 1, 2:4].all()


def test_mni152_mask_token_fraction():
    mask = mni152_voxel_mask((96, 96, 96))
    assert mask.shape == (96, 96, 96)
    assert mask.sum() == 235375  # every voxel of nilearn's 2 mm mask fits into 96^3
    kept = token_mask_from_voxels(mask, (6, 6, 6)).mean()
    assert kept == pytest.approx(0.3616, abs=1e-3)
    assert ORIGINAL_REDUCTION == pytest.approx(0.4655, abs=1e-3)


def test_check_flops_cli_table_and_json(tmp_path, repo_root):
    out = tmp_path / "rows.json"
    res = run_script(repo_root, "check_flops", "--model", "fmamba",
                     "--embed_dim", "256", "--depth", "12", "--patch_size", "6", "6", "6", "2",
                     "--img_size", "96", "96", "96", "20", "--batch_size", "1",
                     "--num_clips_per_epoch", "1000", "--json", out)
    assert res.returncode == 0, res.stderr
    assert "Original claim" in res.stdout
    rows = json.loads(out.read_text())
    assert rows[0]["setting"] == "all tokens" and rows[0]["params"] == 5_387_512
    assert rows[1]["kept %"] == pytest.approx(36.2, abs=0.1)
    assert rows[0]["train/epoch"] == pytest.approx(1000 * 3 * rows[0]["fwd total/clip"])


def test_check_flops_cli_bad_input_is_one_line(repo_root):
    res = run_script(repo_root, "check_flops", "--img_size", "95", "96", "96", "20", "--mask", "none")
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "not divisible" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_data_masks_give_the_models_own_kept_tokens():
    """Token counts from real clips (the data-module path of check_flops) equal what FMamba's
    background removal keeps on the same batches."""
    from argparse import Namespace

    from neuromamba.analysis.data_masks import masks_from_datamodule
    from neuromamba.data.datamodule import FMRIDataModule
    from neuromamba.models.embedding import patchify, select_tokens

    cfg = FMambaFlopsConfig(**TINY)
    args = Namespace(dataset_name="Dummy", image_path=None, input_scaling_method="znorm_minback",
                     batch_size=3, num_batches=2)
    masks = masks_from_datamodule(args, cfg)
    assert len(masks.batches) == 2 and all(len(b) == 3 for b in masks.batches)
    dm = FMRIDataModule("Dummy", img_size=(24, 24, 24, 4), pretraining=True, batch_size=3, seed=1234,
                        input_scaling_method="znorm_minback")
    dm.setup("fit")
    assert masks.clips_per_epoch == len(dm.datasets["train"])
    for batch, voxel_masks in zip(dm.model_batches("train", 3), masks.batches):
        tokens = patchify(batch["fmri"], (6, 6, 6, 2))
        for rule in ("batch", "packed"):
            expected = select_tokens(tokens, rule, "min").lengths.tolist()
            assert token_lengths(cfg, voxel_masks, rule) == expected


def test_hdf5_run_mask(tmp_path, repo_root):
    from neuromamba.data.dummy import DummySpec, write_dummy_runs

    (path,) = write_dummy_runs(tmp_path, DummySpec(num_subjects=3, img_size=(24, 24, 24), num_frames=4))[:1]
    import h5py

    with h5py.File(path, "r") as f:
        stored = np.asarray(f["brain_mask"]).astype(bool)
    kept = token_mask_from_voxels(stored, (6, 6, 6)).mean()
    res = run_script(repo_root, "check_flops", "--embed_dim", "32", "--img_size", "24", "24", "24", "4",
                     "--hdf5_file", path, "--json", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[1]["kept %"] == pytest.approx(100 * kept, abs=0.05)


def test_unreadable_mask_files_give_one_line_errors(tmp_path, repo_root):
    import h5py

    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image\n")
    h5py.File(tmp_path / "empty.h5", "w").close()
    cases = [(("--mask_file", not_an_image), "not a readable NIfTI file"),
             (("--hdf5_file", not_an_image), "--hdf5_file"),
             (("--hdf5_file", tmp_path / "empty.h5"), "neither 'brain_mask' nor 'fmri'")]
    for flags, expected in cases:
        res = run_script(repo_root, "check_flops", "--embed_dim", "32", "--img_size", "24", "24", "24", "4",
                         *flags)
        assert res.returncode == 2
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr


def test_verify_at_the_default_chunk_size_counts_what_runs(repo_root):
    """check_flops.py --verify with --chunk_size 256 (the default) on the CPU path, which
    scans in chunks of 64: the analytic count of what ran matches FlopCounterMode."""
    from analysis_helpers import run_script

    res = run_script(repo_root, "check_flops", "--embed_dim", "32", "--depth", "1", "--d_state", "8",
                     "--headdim", "32", "--img_size", "24", "24", "24", "4", "--verify")
    assert res.returncode == 0, res.stderr
    assert "MISMATCH" not in res.stdout and res.stdout.count("-> OK") >= 2
    assert "at chunk 64" in res.stdout and "chunks of 64" in res.stdout


def test_the_mni_mask_sits_on_the_grid_at_the_datas_voxel_size(capsys):
    """`flops` on a 4 mm 48^3 grid said 98.4% of tokens kept (the 2 mm mask crops to the
    middle of the brain there); the data keep 47.1%. --voxel_size places the MNI mask as
    preprocessing's --resample_to places the runs, and the table names the mask it used."""
    from neuromamba.commands.flops import main as flops

    shares = {}
    for mm in ("2", "4"):
        assert flops(["--embed_dim", "16", "--depth", "1", "--img_size", "48", "48", "48", "8",
                      "--voxel_size", mm]) == 0
        out = capsys.readouterr().out
        line = next(ln for ln in out.splitlines() if ln.startswith("nilearn MNI152 brain mask"))
        assert f"on the 48x48x48 grid at {mm} mm, batch" in line
        shares[mm] = float(line.split("batch")[1].split()[1])
    assert shares["2"] > 95 and 44 < shares["4"] < 50
