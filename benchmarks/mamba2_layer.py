"""Mamba2 layer cost against its GEMM floor, and its memory growth with sequence length.

Claim: for the Base layer (d_model 192, d_state 48, headdim 192, expand 2, chunk 256,
batch 1) the pure-PyTorch path's forward+backward costs at most 2x its two GEMMs alone
(in_proj + out_proj, forward+backward on the same shapes: a floor no implementation of the
layer can beat), and its peak memory grows linearly with the sequence length.

    python benchmarks/mamba2_layer.py                      # CPU, 4k/16k/41k tokens
    python benchmarks/mamba2_layer.py --device cuda        # adds fused-vs-pure on a GPU

Time: median wall-clock of --repeats forward+backward passes after one warm-up, and the median
process CPU time (all threads) of the same passes: on a shared machine the CPU-time ratio is
the steadier of the two. --breakdown times the pure path's pieces alone.
Memory (CPU): each measurement runs in a fresh subprocess; after a 256-token warm-up pass it
reports (median of 3 runs) the process's peak resident set size (VmHWM, reset just before)
during one forward+backward minus the resident size just before it (model and input already
allocated): what the pass really costs in RAM, allocator overhead included. On CUDA: the
growth of torch.cuda.max_memory_allocated over the pass.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "project"))

from neuromamba.models.mamba2 import BACKEND_ENV_VAR, PURE_CPU_MAX_CHUNK, Mamba2  # noqa: E402

BASE_LAYER = dict(d_model=192, d_state=48, headdim=192, expand=2, chunk_size=256)


def build(seqlen: int, device: str):
    torch.manual_seed(0)
    layer = Mamba2(**BASE_LAYER).to(device)
    u = torch.randn(1, seqlen, BASE_LAYER["d_model"], device=device, requires_grad=True)
    return layer, u


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, device: str, repeats: int):
    """Median wall-clock seconds, and median process CPU seconds (all threads), per call."""
    fn()  # warm-up (allocator, kernels' autotuning)
    wall, cpu = [], []
    for _ in range(repeats):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def layer_step(layer, u):
    def step():
        out = layer(u)
        out.backward(torch.ones_like(out))
        layer.zero_grad(set_to_none=True)
        u.grad = None
    return step


def gemm_floor_step(layer, u):
    """in_proj and out_proj forward+backward on the layer's own shapes, nothing else."""
    y = torch.randn(u.shape[0], u.shape[1], layer.d_inner, device=u.device, requires_grad=True)

    def step():
        a = layer.in_proj(u)
        b = layer.out_proj(y)
        torch.autograd.backward([a, b], [torch.ones_like(a), torch.ones_like(b)])
        layer.zero_grad(set_to_none=True)
        u.grad = y.grad = None
    return step


def component_steps(layer, u):
    """The pure path's pieces on the layer's own shapes, each forward+backward alone."""
    from neuromamba.models import ssd

    seqlen = u.shape[1]
    torch.manual_seed(1)
    conv_dim = layer.conv1d.weight.shape[0]
    xBC = torch.randn(1, seqlen, conv_dim, device=u.device, requires_grad=True)
    x = torch.randn(1, seqlen, layer.nheads, layer.headdim, device=u.device, requires_grad=True)
    dt = torch.randn(1, seqlen, layer.nheads, device=u.device, requires_grad=True)
    B = torch.randn(1, seqlen, layer.ngroups, layer.d_state, device=u.device, requires_grad=True)
    C = torch.randn_like(B, requires_grad=True)
    y = torch.randn(1, seqlen, layer.d_ssm, device=u.device, requires_grad=True)
    z = torch.randn_like(y, requires_grad=True)
    A = -torch.exp(layer.A_log.detach())
    chunk = layer.chunk_size
    if u.device.type == "cpu":
        chunk = min(chunk, PURE_CPU_MAX_CHUNK)  # what the layer's pure path uses

    def backward(out):
        out.backward(torch.ones_like(out))
        layer.zero_grad(set_to_none=True)

    return {
        "conv1d+silu": lambda: backward(ssd.causal_conv1d_ref(
            xBC, layer.conv1d.weight.squeeze(1), layer.conv1d.bias, activation="silu")),
        "ssd scan": lambda: backward(ssd.mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk, D=layer.D, dt_bias=layer.dt_bias,
            dt_softplus=True)),
        "gated rmsnorm": lambda: backward(layer.norm(y, z)),
        "GEMMs": gemm_floor_step(layer, u),
    }


def keep_freed_memory_in_heap() -> None:
    """glibc: serve every allocation from the heap and never trim it (mallopt).

    By default glibc mmaps each block over 32 MiB and unmaps it on free, so every 80 MB
    activation of a 41k-token pass is page-faulted (zeroed by the kernel) afresh: at 41k
    tokens that system time exceeds the layer's arithmetic. With heap reuse, freed activations
    are recycled like a caching allocator would. Process-wide; used only when asked for.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    if not ok:
        raise RuntimeError("mallopt failed: --allocator heap-reuse needs glibc")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); harmless where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure_memory_here(seqlen: int, device: str) -> int:
    """Bytes one forward+backward adds at peak (runs inside the measuring subprocess)."""
    # A short warm-up pass first so one-time costs (lazy libraries, thread pools) are not
    # counted; its own peak is far below the measured pass's.
    layer_step(*build(256, device))()
    layer, u = build(seqlen, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        layer_step(layer, u)()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    # VmHWM, not ru_maxrss: the latter carries the parent's RSS over fork+exec.
    reset_peak_rss()
    before = _status_bytes("VmRSS")
    layer_step(layer, u)()
    return _status_bytes("VmHWM") - before


def measure_memory(seqlen: int, device: str, backend: str, threads, allocator: str,
                   runs: int = 3) -> int:
    """Median over `runs` fresh subprocesses (RSS readings jitter on a busy machine)."""
    env = dict(os.environ, **{BACKEND_ENV_VAR: backend})
    cmd = [sys.executable, __file__, "--memory-child", str(seqlen), "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += ["--allocator", allocator]
    results = []
    for _ in range(runs):
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1])["bytes"])
    return int(statistics.median(results))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seqlens", default="4096,16384,40960",
                        help="comma-separated sequence lengths")
    parser.add_argument("--memory-seqlens", default="16384,40960",
                        help="comma-separated lengths for the memory table ('' to skip)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the pure path's pieces at the longest seqlen")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--allocator", choices=("default", "heap-reuse"), default="default",
                        help="heap-reuse: glibc keeps freed blocks (no page faults per pass)")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator == "heap-reuse":
        keep_freed_memory_in_heap()

    if args.memory_child is not None:
        print(json.dumps({"bytes": measure_memory_here(args.memory_child, args.device)}))
        return

    seqlens = [int(s) for s in args.seqlens.split(",") if s]
    backends = ["pure"] + (["fused"] if args.device.startswith("cuda") else [])
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"config={BASE_LAYER} batch=1 repeats={args.repeats} allocator={args.allocator} "
          f"loadavg={os.getloadavg()[0]:.1f} (other processes share these cores when > 0)")
    print(f"{'seqlen':>7} {'backend':>7} {'layer s':>9} {'GEMMs s':>9} {'ratio':>6} "
          f"{'layer cpu-s':>12} {'GEMMs cpu-s':>12} {'cpu ratio':>9}")
    for seqlen in seqlens:
        layer, u = build(seqlen, args.device)
        floor, floor_cpu = median_time(gemm_floor_step(layer, u), args.device, args.repeats)
        for backend in backends:
            os.environ[BACKEND_ENV_VAR] = backend
            t, t_cpu = median_time(layer_step(layer, u), args.device, args.repeats)
            print(f"{seqlen:>7} {backend:>7} {t:>9.3f} {floor:>9.3f} {t / floor:>6.2f} "
                  f"{t_cpu:>12.3f} {floor_cpu:>12.3f} {t_cpu / floor_cpu:>9.2f}", flush=True)
        os.environ[BACKEND_ENV_VAR] = "pure"
        if args.breakdown and seqlen == max(seqlens):
            print(f"\npure-path pieces at {seqlen} tokens, each forward+backward alone")
            print(f"{'piece':>14} {'s':>8} {'cpu-s':>8}")
            for name, step in component_steps(layer, u).items():
                t, t_cpu = median_time(step, args.device, args.repeats)
                print(f"{name:>14} {t:>8.3f} {t_cpu:>8.3f}", flush=True)
        del layer, u

    mem_lens = [int(s) for s in args.memory_seqlens.split(",") if s]
    if mem_lens:
        what = "peak RSS growth" if args.device == "cpu" else "max_memory_allocated growth"
        print(f"\nmemory of one forward+backward ({what}, median of 3 fresh subprocesses)")
        print(f"{'seqlen':>7} {'backend':>7} {'MiB':>9} {'ratio to first':>15}")
        for backend in backends:
            first = None
            for seqlen in mem_lens:
                mib = measure_memory(seqlen, args.device, backend, args.threads,
                                     args.allocator) / 2**20
                first = first or mib
                print(f"{seqlen:>7} {backend:>7} {mib:>9.1f} {mib / first:>15.2f}", flush=True)
        if len(mem_lens) >= 2:
            print(f"(linear growth predicts {mem_lens[-1] / mem_lens[0]:.2f}, "
                  f"quadratic {(mem_lens[-1] / mem_lens[0]) ** 2:.2f})")


if __name__ == "__main__":
    main()
