"""The fast CPU ops of the Mamba2 layer, each tested against its plain reference in
:mod:`neuromamba.models.ssd_minimal` (tests/models): the chunked SSD scan (same signature as
mamba_ssm's ``mamba_chunk_scan_combined``), the depthwise causal conv and the gated RMSNorm."""
from .conv import causal_conv1d
from .gated_norm import gated_rms_norm
from .scan import mamba_chunk_scan_combined, process_dt

__all__ = ["causal_conv1d", "gated_rms_norm", "mamba_chunk_scan_combined", "process_dt"]
