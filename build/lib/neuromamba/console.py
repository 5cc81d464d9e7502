"""What a run prints: known-harmless library messages silenced (narrowly, by their text), and
the project's own warnings as one plain line each.

Applied by the entry scripts (``quiet_known_noise``), not on import: a notebook user keeps
every message their libraries send.
"""
from __future__ import annotations

import logging
import warnings

# (category, regex of the message): messages that are known and harmless here.
KNOWN_HARMLESS = (
    # Lightning's pytree helper on torch >= 2.10; nothing for a user to change.
    (Warning, r".*isinstance\(treespec, LeafSpec\)` is deprecated"),
    # A frozen backbone is in eval mode on purpose (--freeze_feature_extractor, --prompt_tuning).
    (Warning, r"Found \d+ module\(s\) in eval mode at the start of training"),
    # The run folder holds the resumed run's own history (neuromamba.training.history).
    (Warning, r"Experiment logs directory .* exists and is not empty"),
    # The test checkpoint is restored through ckpt_path on purpose.
    (Warning, r".*Checkpoint directory .* exists and is not empty"),
)
# Lightning's advertisement for another product, logged at INFO on every Trainer.
KNOWN_LOG_NOISE = ("litlogger",)


class NeuroMambaWarning(UserWarning):
    """Something the user should know about their data or settings (printed as one line)."""


class _DropKnownLogNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in KNOWN_LOG_NOISE)


def quiet_known_noise() -> None:
    """Silence the messages above and print NeuroMambaWarnings as ``warning: <text>``."""
    for category, pattern in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                 "pytorch_lightning.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropKnownLogNoise())
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, NeuroMambaWarning):
            import sys

            print(f"warning: {message}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def one_line_error(error: BaseException) -> str:
    """A user error as one line naming the file: OSErrors carry the path apart from the text."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, PermissionError) and error.filename:
        return f"{error.filename}: permission denied (choose a folder you can write to)"
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        return f"{error.filename}: {error.strerror or error}"
    return " ".join(str(error).split())
