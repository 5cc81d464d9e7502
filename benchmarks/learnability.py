"""Does it learn? Synthetic cohorts on the real MNI152 brain with a planted label signal, and the
held-out subject-level AUC of classical baselines and of the model's documented recipes.

Each cohort: nilearn's MNI152 brain at 4 mm on the 48^3 world grid, one run per subject, every
subject with its own static texture and baseline (what a model can memorise) plus smooth
background fluctuations, and one kind of label signal (class 1 only):

  * ``local``    : a stronger temporal fluctuation inside one small region;
  * ``network``  : a weaker amplitude increase spread over four regions;
  * ``coupling`` : two regions share one time course (same variance in both classes).

For every cohort and seed (the cohort and its subject split both change with the seed) it
reports the test AUC of: the baselines (project/baseline.py: ``patch_stats``, ``fc``);
fine-tuning from scratch with the linear, mamba and attention heads; pretraining then full
fine-tuning; pretraining then the frozen backbone with a linear head. Pretraining sees only
the training subjects. Prints a table of mean +- std over the seeds.

    python benchmarks/learnability.py --out /tmp/nm_learn --seeds 3 --subjects 80 --epochs 4

Tiny model (C 32, 2 blocks) and short runs so a 2-core CPU finishes in minutes: the numbers say
whether the recipes can find each kind of signal at all, not how well a full model would.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "project"))

GRID = (48, 48, 48)
VOXEL_MM = 4.0
KINDS = ("local", "network", "coupling")
MODEL = ["--embed_dim", "32", "--depth", "2", "--d_state", "8", "--headdim", "32"]
METHODS = ("baseline patch_stats", "baseline fc", "scratch linear", "scratch mamba",
           "scratch attention", "pretrain + full fine-tune", "pretrain + frozen linear")


def mni_mask_4mm() -> tuple:
    """(brain mask on the 48^3 4 mm world grid, its grid affine)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    from neuromamba.data.nifti import apply_crop_pad
    from neuromamba.data.placement import place_run

    img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(img.dataobj) > 0
    placed = place_run(mask[..., None].astype(np.float32), mask, np.asarray(img.affine), target_shape=GRID,
                       resample_to=VOXEL_MM, allow_crop_brain=True, path="MNI152")
    return apply_crop_pad(placed.mask, placed.record).astype(bool), placed.record.target_affine, nib


def _blob(shape, centre, radius) -> np.ndarray:
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((a - c) / radius) ** 2 for a, c in zip(axes, centre)) <= 1.0


def _smooth(rng, shape, coarse=6) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    grid = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse, coarse)).astype(np.float32))
    return F.interpolate(grid, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def regions(mask: np.ndarray) -> dict:
    """Fixed regions inside the brain (the same for every subject: MNI space)."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    at = lambda f: tuple(int(l + f_ * (h - l)) for l, h, f_ in zip(lo, hi, f))  # noqa: E731
    spots = {"local": [at((0.3, 0.5, 0.6))], "network": [at(f) for f in
                                                          ((0.25, 0.3, 0.5), (0.75, 0.3, 0.5),
                                                           (0.3, 0.7, 0.6), (0.7, 0.7, 0.6))],
             "coupling": [at((0.3, 0.55, 0.55)), at((0.7, 0.55, 0.55))]}
    return {k: [_blob(GRID, c, 3.0) & mask for c in v] for k, v in spots.items()}


def subject_run(rng, mask, kind, label, spots, frames) -> np.ndarray:
    """(T, D, H, W) raw frames of one subject: baseline + its texture + fluctuations + signal."""
    t = np.arange(frames, dtype=np.float32)
    texture = 600.0 + 120.0 * _smooth(rng, GRID, 8) + 40.0 * rng.standard_normal(GRID).astype(np.float32)
    data = np.repeat(texture[None], frames, axis=0)
    for _ in range(3):  # smooth background fluctuations, different in every subject
        course = np.sin(2 * np.pi * rng.uniform(0.03, 0.2) * t + rng.uniform(0, 2 * np.pi))
        data += 15.0 * course[:, None, None, None] * _smooth(rng, GRID, 4)[None]
    data += 8.0 * rng.standard_normal(data.shape).astype(np.float32)
    if label == 1:
        if kind == "local":
            data[:, spots["local"][0]] += 60.0 * rng.standard_normal((frames, 1)).astype(np.float32)
        elif kind == "network":
            for region in spots["network"]:
                data[:, region] += 30.0 * rng.standard_normal((frames, 1)).astype(np.float32)
    if kind == "coupling":  # both classes fluctuate alike; only class 1 shares the course
        a = 40.0 * rng.standard_normal(frames).astype(np.float32)
        b = a if label == 1 else 40.0 * rng.standard_normal(frames).astype(np.float32)
        data[:, spots["coupling"][0]] += a[:, None]
        data[:, spots["coupling"][1]] += b[:, None]
    return np.where(mask[None], data, 0.0).astype(np.float32)


def write_cohort(out: Path, kind: str, seed: int, subjects: int, frames: int) -> Path:
    from neuromamba.data import store

    mask, affine, _ = mni_mask_4mm()
    spots = regions(mask)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    root = out / f"{kind}_seed{seed}"
    labels = [i % 2 for i in range(subjects)]
    rng.shuffle(labels)
    for i, label in enumerate(labels):
        frames_tdhw = subject_run(rng, mask, kind, label, spots, frames)
        stats = store.compute_stats(frames_tdhw, frame_axis=0)
        store.write_run(store.run_path(root / "h5", f"s{i:03d}", "rest"), frames_tdhw, subject=f"s{i:03d}",
                        run="rest", stats=stats, brain_mask=mask, storage_dtype=np.dtype(np.float32),
                        voxel_size=(VOXEL_MM,) * 3,
                        extra_attrs={"grid_affine": affine, "placement": "world"})
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "label"])
        writer.writerows([[f"s{i:03d}", label] for i, label in enumerate(labels)])
    return root


def _main_run(argv) -> dict:
    from neuromamba.cli import parse_args
    from neuromamba.training.runner import run

    return run(parse_args(argv))


def evaluate_cohort(root: Path, seed: int, epochs: int, frames: int, lr: float = 2e-3) -> dict:
    """Test AUC of every method on one cohort."""
    import argparse as _argparse

    from neuromamba.analysis.baseline_cli import run as baseline_run

    data = ["--dataset_name", "CSV", "--image_path", str(root / "h5"), "--img_size", *map(str, GRID),
            str(frames // 2), "--accelerator", "cpu", "--no_progress_bar", "--seed", str(seed),
            "--train_split", "0.6", "--val_split", "0.2", "--calc_loss_without_background",
            "--batch_size", "4", "--output_dir", str(root / "runs")]
    labelled = ["--label_csv", str(root / "labels.csv"), "--downstream_task", "label"]
    train = ["--max_epochs", str(epochs), "--learning_rate", str(lr)]
    auc = {}
    first = _main_run(MODEL + data + labelled + train + ["--run_name", "scratch_linear"])
    auc["scratch linear"] = first["metrics"].get("test/auroc")
    split = next((Path(first["run_dir"]) / "splits").glob("split_*.txt"))
    same = ["--split_file", str(split)]
    result = baseline_run(_argparse.Namespace(run_dir=first["run_dir"], features=["patch_stats", "fc"],
                                              atlas=None, fc_max_parcels=300, output_dir=None))
    for feature_set, entry in result["feature_sets"].items():
        auc[f"baseline {feature_set}"] = (entry.get("test") or {}).get("auroc")
    auc["scratch mamba"] = _main_run(MODEL + data + labelled + train + same + [
        "--clf_head_version", "mamba", "--run_name", "scratch_mamba"])["metrics"].get("test/auroc")
    auc["scratch attention"] = _main_run(MODEL + data + labelled + train + same + [
        "--clf_head_version", "attention", "--run_name", "scratch_attention"])["metrics"].get("test/auroc")
    pre = _main_run(MODEL + data + same + ["--pretraining", "--max_epochs", str(epochs),
                                           "--learning_rate", str(lr), "--run_name", "pretrain"])
    ckpt = str(Path(pre["run_dir"]) / "checkpoints" / "last.ckpt")
    auc["pretrain + full fine-tune"] = _main_run(MODEL + data + labelled + train + same + [
        "--load_model_path", ckpt, "--run_name", "finetune"])["metrics"].get("test/auroc")
    auc["pretrain + frozen linear"] = _main_run(MODEL + data + labelled + train + same + [
        "--load_model_path", ckpt, "--freeze_feature_extractor", "--learning_rate", str(5 * lr),
        "--run_name", "frozen"])["metrics"].get("test/auroc")
    return auc


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/nm_learnability", help="scratch folder for cohorts and runs")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="signal kinds")
    p.add_argument("--seeds", type=int, default=3, help="cohorts (and splits) per kind")
    p.add_argument("--subjects", type=int, default=80, help="subjects per cohort (half per class)")
    p.add_argument("--frames", type=int, default=16, help="frames per run (clips of frames/2)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of every training run")
    p.add_argument("--learning_rate", type=float, default=2e-3,
                   help="peak learning rate of the training runs (the frozen probe gets 5x)")
    args = p.parse_args(argv)
    import neuromamba  # noqa: F401  (allocator tuning)
    from neuromamba.console import quiet_known_noise

    quiet_known_noise()
    out = Path(args.out)
    results = {kind: {m: [] for m in METHODS} for kind in args.kinds}
    started = time.time()
    for kind in args.kinds:
        for seed in range(args.seeds):
            root = write_cohort(out, kind, seed, args.subjects, args.frames)
            for method, value in evaluate_cohort(root, seed, args.epochs, args.frames,
                                                 args.learning_rate).items():
                results[kind][method].append(float("nan") if value is None else float(value))
    (out / "learnability.json").write_text(json.dumps(results, indent=2))
    print(f"\nheld-out test AUC (subject level), mean +- std over {args.seeds} cohorts per kind; "
          f"{args.subjects} subjects, {args.frames} frames, 48^3 at 4 mm, {args.epochs} epochs, "
          f"lr {args.learning_rate:g}; "
          f"{time.time() - started:.0f} s")
    print("| method | " + " | ".join(args.kinds) + " |")
    print("|---" * (len(args.kinds) + 1) + "|")
    for method in METHODS:
        cells = []
        for kind in args.kinds:
            values = [v for v in results[kind][method] if v == v]
            if not values:
                cells.append("n/a")
                continue
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} +- {spread:.2f}")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
