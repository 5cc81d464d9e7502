"""Checkpoints written atomically: a crash (disk full, a kill) never replaces a good
``last.ckpt`` with a truncated one.

Lightning's own writer serialises into memory and then writes the final file in place (or
copies it across file systems), so running out of space leaves a half-written checkpoint under
the real name. Here ``torch.save`` writes a temporary file in the checkpoint's own folder, the
data are fsync-ed, and only then is it renamed over the final name (a rename within a folder is
atomic). DeepSpeed strategies write their own checkpoint folders and do not use this.
"""
from __future__ import annotations

from pytorch_lightning.plugins.io import TorchCheckpointIO

from neuromamba.fileio import atomic_path, fsync_file


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
                fsync_file(tmp)
        except (RuntimeError, OSError) as error:
            raise _as_disk_error(error, path) from None


def _as_disk_error(error: Exception, path) -> Exception:
    """torch.save reports a full disk as a RuntimeError from its C++ writer ("file write
    failed", or "unexpected pos N vs M" when a write came up short); make it one OSError naming
    the file and the free space. Anything else passes."""
    import errno
    import shutil
    from pathlib import Path

    text = str(error)
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "write failed" in text \
        or "No space left" in text or "unexpected pos" in text
    if not full:
        return error
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return OSError(errno.ENOSPC, f"no space left to write the checkpoint {path} ({free}); the "
                                 f"checkpoints already in its folder are intact: free space and "
                                 f"resume with --resume_ckpt_path")
