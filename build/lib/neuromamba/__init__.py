"""NeuroMamba: a Mamba2 state-space foundation model for whole-brain 4D fMRI.

The public API lives in the subpackages: ``neuromamba.models`` (backbone, heads, the Mamba2
layer), ``neuromamba.checkpoints`` (loading released and trained weights), ``neuromamba.data``
(preprocessing, HDF5 runs, datasets) and ``neuromamba.training`` (the Lightning module).
"""

__version__ = "0.1.0"

# CPU steps reuse large buffers: keep freed memory in the process instead of re-faulting it
# every step (neuromamba/allocator.py; opt out with NEUROMAMBA_MALLOC=system).
from .allocator import tune_malloc as _tune_malloc  # noqa: E402

MALLOC_TUNED = _tune_malloc()
