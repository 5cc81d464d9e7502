"""Tiny models, checkpoints and planted-signal clips for the analysis tests."""
import numpy as np
import torch

TINY_FLAGS = ["--embed_dim", "32", "--depth", "2", "--d_state", "8", "--headdim", "32",
              "--img_size", "24", "24", "24", "4", "--chunk_size", "64"]


def tiny_module(task: str = "classification", num_classes: int = 2, target_mean: float = 0.0,
                target_std: float = 1.0, extra=()):
    """A NeuroMambaModule of stream D built from main.py flags (no training)."""
    from neuromamba.cli import args_to_dict, parse_args
    from neuromamba.training.module import NeuroMambaModule

    flags = list(TINY_FLAGS) + ["--accelerator", "cpu"] + list(extra)
    if task == "pretraining":
        flags += ["--pretraining"]
    else:
        flags += ["--downstream_task_type", task]
    args = parse_args(flags)
    return NeuroMambaModule(args_to_dict(args), num_classes=num_classes if task == "classification" else None,
                            target_mean=target_mean, target_std=target_std)


def save_lightning_like(module, path) -> str:
    """The two entries of a Lightning checkpoint that loading needs, weights_only-readable."""
    hparams = {k: v for k, v in dict(module.hparams).items()}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, path)
    return str(path)


def planted_subject_clips(num_subjects=8, runs=2, clips_per_run=2, size=24, frames=4,
                          noise=0.5, seed=0):
    """Clips whose spatial pattern is fixed per subject (shared by its runs) plus run noise,
    inside a cube 'brain' with a constant background (the minimum)."""
    rng = np.random.default_rng(seed)
    brain = np.zeros((size,) * 3, bool)
    brain[3:-3, 3:-3, 3:-3] = True
    batches = []
    for s in range(num_subjects):
        pattern = rng.normal(size=(size, size, size, 1)) * 1.0
        for r in range(runs):
            for c in range(clips_per_run):
                x = pattern + noise * rng.normal(size=(size, size, size, frames))
                x = np.where(brain[..., None], np.clip(x, -4, 4), -5.0).astype(np.float32)
                batches.append({"fmri": torch.from_numpy(x)[None, None], "subject": [f"s{s}"],
                                "run": [f"r{r}"], "start": torch.tensor([c * frames])})
    return batches


class ScriptResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_script(repo_root, name, *argv):
    """Run ``project/<name>.py`` in-process (no new interpreter: saves the torch import) with
    the CLI's own error handling; returns returncode/stdout/stderr like subprocess.run."""
    import contextlib
    import importlib.util
    import io

    path = repo_root / "project" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.run([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return ScriptResult(code, out.getvalue(), err.getvalue())
