"""NeuroMamba GPU validation suite: fused-kernel parity, throughput, memory,
an end-to-end pretrain + fine-tune run and model FLOP utilisation, written as one results
table (Markdown, CSV, JSON). ``python -m gpu_suite --help`` (with benchmarks/ on the path),
``python benchmarks/gpu_suite --help``, or ``bash benchmarks/gpu_suite.sh`` on a GPU machine."""
