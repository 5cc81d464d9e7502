"""Data: NIfTI preprocessing to per-TR HDF5, load-time scaling, clip datasets, splits.

Modules (import what you need; nothing heavy is imported here):
``nifti`` (read/validate/resample/crop-pad with a record), ``store`` (the HDF5 run format),
``scaling`` (the four input-scaling options), ``windows`` (clip windows), ``dummy`` (synthetic
demo data), ``labels`` (label tables), ``splits`` (subject splits), ``datasets`` (clip datasets
and the dataset registry), ``samplers`` (DDP samplers), ``datamodule`` (Lightning DataModule),
``preprocess_runner`` / ``legacy`` / ``check`` (the preprocessing commands).
"""
