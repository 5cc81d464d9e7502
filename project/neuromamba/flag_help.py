"""Help texts of the flags several entry scripts share, and the help formatter they all use.

One place for the words, so ``--img_size`` means the same in main.py, embed.py and
check_flops.py. A script's own, specific help wins; :func:`fill_missing_help` only fills
flags defined without one. ``tests/test_flag_help.py`` checks that no flag of any entry
script is left without help.
"""
from __future__ import annotations

import argparse

SHARED_HELP = {
    # model
    "--model": "model family (only fmamba, the NeuroMamba backbone)",
    "--patch_size": "token size in voxels x voxels x voxels x frames (D H W T); must divide --img_size",
    "--img_size": "clip size: model grid D H W in voxels (the preprocessed files' grid) and T frames",
    "--pos_embedding": "positional encoding of the token grid: nerf (the original), ff (random "
                       "Fourier features), cpe (sine-cosine), none",
    "--drop_rate": "dropout probability after each Mamba2 block (0 disables it)",
    "--chunk_size": "tokens per chunk of the Mamba2 SSD scan (the fused kernels' chunk; the pure "
                    "CPU path caps it at 64, with the same results)",
    "--embed_dim": "token width C (channels); alone it selects the variant of that width",
    "--clf_head_version": "task head on the pooled backbone features (see the head registry)",
    "--num_classes": "number of classes of the classification head",
    # data
    "--dataset_name": "dataset registry name (HCP, S1200, ABCD, UKB, CSV, or Dummy: synthetic data)",
    "--image_path": "folder of preprocessed HDF5 runs ({subject}/{run}.h5)",
    "--input_scaling_method": "load-time scaling of the raw values with each run's brain statistics; "
                              "znorm_demean also removes each brain voxel's mean over the clip, "
                              "znorm_minback is the paper's input "
                              "(see ADDING_YOUR_DATASET.md, section 6)",
    "--train_split": "fraction of subjects (not clips) in the training split",
    "--val_split": "fraction of subjects in the validation split (the rest is the test split)",
    "--split": "which subject split's clips to use",
    "--split_file": "reuse this subject split file (lines train_subjects, ids..., val_subjects, ..., "
                    "test_subjects, ...)",
    "--label_csv": "label table(s): one row per subject (or per subject and run); default: the CSV "
                   "in the dataset's metadata/ folder",
    "--subject_column": "column of --label_csv holding the subject ids",
    "--target_column": "column of --label_csv holding the target (default: from --downstream_task)",
    "--stride_within_seq": "frame step inside a clip (1: consecutive frames)",
    "--batch_size": "clips per batch (per GPU)",
    "--num_workers": "DataLoader worker processes (0: load in the main process)",
    "--seed": "random seed (splits, initialisation, shuffling, synthetic data)",
    "--dummy_num_subjects": "Dummy data: number of synthetic subjects",
    "--dummy_num_frames": "Dummy data: frames per run (default: two clips' worth)",
    "--dummy_num_runs": "Dummy data: runs per subject",
    "--dummy_num_classes": "Dummy data: number of planted classes",
    "--dummy_label_level": "Dummy data: one label per subject, or a task-state label per run",
    # fine-tuning
    "--prompt_len": "prompt tokens learnt with --prompt_tuning",
    # optimisation
    "--learning_rate": "peak learning rate of AdamW (after warmup)",
    "--weight_decay": "AdamW weight decay (not applied to norms, biases, A_log, D, dt_bias)",
    "--warmup_ratio": "fraction of the optimizer steps spent in linear warmup",
    "--min_lr_ratio": "learning rate at the end of the cosine, as a fraction of the peak",
    "--clip_grad_norm": "clip the global gradient L2 norm to this value (default: no clipping)",
    "--gradient_accumulation_steps": "batches accumulated per optimizer step",
    "--precision": "numeric precision: 32, bf16 (bf16 autocast, fp32 weights) or 16",
    # hardware and run
    "--accelerator": "cpu, gpu/cuda, or auto (a GPU when one is visible)",
    "--device": "where to run: auto (CUDA when available), cpu, cuda or cuda:N",
    "--num_nodes": "machines in a multi-node run (with --devices GPUs each)",
    "--strategy": "distributed strategy: auto, ddp, or deepspeed_stage_1/2/3 (GPU only)",
    "--max_epochs": "passes over the training clips",
    "--max_steps": "stop after this many optimizer steps (-1: no limit, --max_epochs decides)",
    "--check_val_every_n_epoch": "validate every N epochs",
    "--log_every_n_steps": "log training metrics every N optimizer steps",
    "--num_sanity_val_steps": "validation batches run before training as a sanity check",
    "--deterministic": "ask PyTorch for deterministic algorithms (slower; some ops refuse)",
    "--project_name": "wandb/tensorboard project name",
    "--no_progress_bar": "no progress bar (for log files)",
    "--allow_pickle": "allow unpickling arbitrary objects from the checkpoint (only for files you trust)",
    "--output_dir": "folder the outputs are written to",
    "--compression": "HDF5 compression of the frames: none (fastest reads), gzip or lzf (smaller files)",
    "--storage_dtype": "on-disk dtype of the raw values; auto picks the smallest exact or "
                       "within-tolerance one",
    "--min_frames": "runs with fewer frames fail (use at least the clip length T)",
    "--overwrite": "redo runs whose output is already complete",
}


def fill_missing_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every flag of ``parser`` (and its subcommands) that has no help the shared text,
    and the common :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                fill_missing_help(sub)
            continue
        if not action.help:
            for name in action.option_strings:
                if name in SHARED_HELP:
                    action.help = SHARED_HELP[name]
                    break
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is one: never "(default: None)" or "(default: False)"."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in help_text \
                or "default" in help_text.lower():
            return help_text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """The parser of every entry script: flags are never abbreviated (``--max_epoch`` is not
    ``--max_epochs``), and a mistake is one line naming the closest flag, not pages of usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def known_flags(self) -> list:
        """Every option string of this parser and of its subcommands."""
        flags = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    flags += list(sub._option_string_actions)
        return sorted(set(flags))

    def error(self, message: str):
        import difflib
        import re

        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            words = unknown.group(1).split()
            flags = [w.split("=", 1)[0] for w in words if w.startswith("-")] or words[:1]
            hints = []
            for flag in flags:
                close = difflib.get_close_matches(flag, self.known_flags(), n=1, cutoff=0.6)
                hints.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
            message = f"unrecognized argument{'s' if len(hints) > 1 else ''} {', '.join(hints)}"
        self.exit(2, f"{self.prog}: error: {message}; {self.prog} --help lists every flag\n")


def prog_for(script: str, command: str) -> str:
    """The command as the user typed it, for usage lines and errors: ``neuromamba COMMAND``
    under the console command, else the script's name (``main.py``)."""
    import sys
    from pathlib import Path

    launcher = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    console = launcher.name == "neuromamba" or launcher.parts[-2:] == ("neuromamba", "__main__.py")
    return f"neuromamba {command}" if console else script
