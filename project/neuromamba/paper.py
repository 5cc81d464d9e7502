"""The paper's settings: the one default of every run-spec setting (the original README and
SPEC.md). A leaf module (it imports nothing), so the model, the data and the resolver all read
the same values without depending on each other."""

PAPER_DEFAULTS = {
    "patch_size": [6, 6, 6, 2],
    "img_size": [96, 96, 96, 20],
    "pos_embedding": "nerf",
    "clf_head_version": "linear",
    "background_removal": "none",
    "input_scaling_method": "znorm_minback",
    "stride_within_seq": 1,
    "stride_between_seq": 1.0,
}

# The SSD chunk length of the Mamba2 scan: mamba_ssm's Mamba2 default, which the original used.
# A numerical knob (the scan's result does not depend on it), not a spec setting.
CHUNK_SIZE = 256
