"""Mamba2 layer cost against its GEMM floor, and its memory growth with sequence length.

Claim: for the Base layer (d_model 192, d_state 48, headdim 192, expand 2, chunk 256,
batch 1) the pure-PyTorch path's forward+backward costs at most 2x its two GEMMs alone
(in_proj + out_proj, forward+backward on the same shapes: a floor no implementation of the
layer can beat), and its peak memory grows linearly with the sequence length.

    python benchmarks/mamba2_layer.py                      # CPU: 4k/16k/41k tokens, 1 and 2 threads
    python benchmarks/mamba2_layer.py --device cuda        # fused vs pure on a GPU

Contenders take turns: in every round each one runs one forward+backward, so load from other
processes hits them alike; the table gives the median seconds over the turns, the ratio of
the medians and the range of the per-turn ratios. The allocator is process-wide, so each
allocator (the project's default, tuned on import, and glibc's own defaults through
NEUROMAMBA_MALLOC=system) gets fresh child processes, alternated over --rounds. Hugging Face's
pure-torch Mamba2 mixer (same weights) is a peer column when ``transformers`` is installed.
Memory (CPU): each measurement runs in a fresh subprocess; after a 256-token warm-up pass it
reports (median of 3 runs) the process's peak resident set size (VmHWM, reset just before)
during one forward+backward minus the resident size just before it: what the pass really costs
in RAM, allocator overhead included. On CUDA: the growth of torch.cuda.max_memory_allocated.
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
    from neuromamba.models import ops

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
        "conv1d+silu": lambda: backward(ops.causal_conv1d(
            xBC, layer.conv1d.weight.squeeze(1), layer.conv1d.bias, activation="silu")),
        "ssd scan": lambda: backward(ops.mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk, D=layer.D, dt_bias=layer.dt_bias,
            dt_softplus=True)),
        "gated rmsnorm": lambda: backward(layer.norm(y, z)),
        "GEMMs": gemm_floor_step(layer, u),
    }


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


def measure_memory(seqlen: int, device: str, backend: str, threads, runs: int = 3) -> int:
    """Median over `runs` fresh subprocesses (RSS readings jitter on a busy machine)."""
    env = dict(os.environ, **{BACKEND_ENV_VAR: backend})
    cmd = [sys.executable, __file__, "--memory-child", str(seqlen), "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    results = []
    for _ in range(runs):
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1])["bytes"])
    return int(statistics.median(results))


def hf_mixer_step(layer, u):
    """Hugging Face's pure-torch Mamba2 mixer with the same weights; None without transformers."""
    try:
        from transformers import Mamba2Config
        from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer
    except Exception:
        return None
    cfg = Mamba2Config(hidden_size=layer.d_model, state_size=layer.d_state, expand=2,
                       head_dim=layer.headdim, num_heads=layer.nheads, n_groups=layer.ngroups,
                       conv_kernel=4, chunk_size=layer.chunk_size, use_bias=False,
                       use_conv_bias=True, rms_norm=True, time_step_limit=(0.0, float("inf")))
    mixer = Mamba2Mixer(cfg, layer_idx=0).to(u.device)
    mixer.load_state_dict(layer.state_dict(), strict=False)

    def step():
        out = mixer(u)
        out.backward(torch.ones_like(out))
        mixer.zero_grad(set_to_none=True)
        u.grad = None
    return step


def interleaved_child(seqlens, thread_counts, repeats: int, device: str) -> list:
    """Per (seqlen, threads): every contender once per turn, in turn, `repeats` turns."""
    rows = []
    for seqlen in seqlens:
        layer, u = build(seqlen, device)
        contenders = {"layer": layer_step(layer, u), "GEMMs": gemm_floor_step(layer, u)}
        peer = hf_mixer_step(layer, u)
        if peer is not None:
            contenders["HF mixer"] = peer
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for step in contenders.values():  # warm-up
                step()
            times = {name: [] for name in contenders}
            for _ in range(repeats):
                for name, step in contenders.items():
                    start = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - start)
            rows.append({"seqlen": seqlen, "threads": threads, "times": times})
        del layer, u
    return rows


ALLOCATORS = {"default (tuned)": {}, "glibc defaults": {"NEUROMAMBA_MALLOC": "system"}}


def run_children(args) -> dict:
    """{allocator: {(seqlen, threads): {contender: [seconds per turn]}}}; the child processes
    alternate between the allocators for --rounds rounds."""
    results = {name: {} for name in ALLOCATORS}
    for _ in range(args.rounds):
        for name, extra in ALLOCATORS.items():
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("MALLOC_", "NEUROMAMBA_MALLOC"))}
            cmd = [sys.executable, __file__, "--child", "--seqlens", args.seqlens,
                   "--thread-counts", args.thread_counts, "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, env={**env, **extra}, check=True, capture_output=True, text=True)
            for row in json.loads(out.stdout.strip().splitlines()[-1]):
                cell = results[name].setdefault((row["seqlen"], row["threads"]), {})
                for contender, values in row["times"].items():
                    cell.setdefault(contender, []).extend(values)
    return results


def print_cpu_table(args, results) -> None:
    peers = any("HF mixer" in cell for per in results.values() for cell in per.values())
    head = "| allocator | threads | tokens | layer s | GEMMs s | layer / GEMMs | per-turn range |"
    head += " HF mixer s | HF / layer |" if peers else ""
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for name, per in results.items():
        for (seqlen, threads), cell in sorted(per.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            layer, floor = statistics.median(cell["layer"]), statistics.median(cell["GEMMs"])
            turns = [a / b for a, b in zip(cell["layer"], cell["GEMMs"])]
            line = (f"| {name} | {threads} | {seqlen} | {layer:.3f} | {floor:.3f} | "
                    f"{layer / floor:.2f} | {min(turns):.2f}-{max(turns):.2f} |")
            if peers:
                hf = statistics.median(cell["HF mixer"]) if "HF mixer" in cell else float("nan")
                line += f" {hf:.3f} | {hf / layer:.2f} |"
            print(line, flush=True)


def cuda_table(args, seqlens) -> None:
    """GPU: fused and pure path, each against the GEMM floor (medians of --repeats)."""
    print(f"device={args.device} torch={torch.__version__} config={BASE_LAYER} batch=1")
    print("| tokens | backend | layer s | GEMMs s | ratio |")
    print("|---|---|---|---|---|")
    for seqlen in seqlens:
        layer, u = build(seqlen, args.device)
        floor, _ = median_time(gemm_floor_step(layer, u), args.device, args.repeats)
        for backend in ("pure", "fused"):
            os.environ[BACKEND_ENV_VAR] = backend
            t, _ = median_time(layer_step(layer, u), args.device, args.repeats)
            print(f"| {seqlen} | {backend} | {t:.3f} | {floor:.3f} | {t / floor:.2f} |", flush=True)
        os.environ[BACKEND_ENV_VAR] = "pure"
        del layer, u


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seqlens", default="4096,16384,40960", help="comma-separated sequence lengths")
    parser.add_argument("--thread-counts", default="1,2", help="comma-separated torch CPU thread counts")
    parser.add_argument("--memory-seqlens", default="16384,40960",
                        help="comma-separated lengths for the memory table ('' to skip)")
    parser.add_argument("--repeats", type=int, default=5, help="turns inside one child process")
    parser.add_argument("--rounds", type=int, default=2, help="child processes per allocator, alternated")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the pure path's pieces at the longest seqlen")
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seqlens = [int(s) for s in args.seqlens.split(",") if s]
    if args.memory_child is not None:
        print(json.dumps({"bytes": measure_memory_here(args.memory_child, args.device)}))
        return
    if args.child:
        threads = [int(t) for t in args.thread_counts.split(",") if t]
        print(json.dumps(interleaved_child(seqlens, threads, args.repeats, args.device)))
        return
    if args.device.startswith("cuda"):
        cuda_table(args, seqlens)
        return

    results = run_children(args)
    print(f"Base Mamba2 layer {BASE_LAYER}, batch 1, forward+backward, pure path; "
          f"torch={torch.__version__}; {args.rounds} child processes x {args.repeats} turns per "
          f"allocator; load average at the end {os.getloadavg()[0]:.1f}")
    print_cpu_table(args, results)

    if args.breakdown:
        seqlen = max(seqlens)
        layer, u = build(seqlen, args.device)
        print(f"\npure-path pieces at {seqlen} tokens, each forward+backward alone "
              f"(default allocator, {torch.get_num_threads()} threads)")
        print("| piece | s |")
        print("|---|---|")
        for name, step in component_steps(layer, u).items():
            t, _ = median_time(step, args.device, args.repeats)
            print(f"| {name} | {t:.3f} |", flush=True)
        del layer, u

    mem_lens = [int(s) for s in args.memory_seqlens.split(",") if s]
    if mem_lens:
        print("\nmemory of one forward+backward (peak RSS growth, median of 3 fresh subprocesses, "
              "default allocator)")
        print("| tokens | MiB | ratio to first |")
        print("|---|---|---|")
        first = None
        for seqlen in mem_lens:
            mib = measure_memory(seqlen, args.device, "pure", args.threads) / 2**20
            first = first or mib
            print(f"| {seqlen} | {mib:.1f} | {mib / first:.2f} |", flush=True)
        if len(mem_lens) >= 2:
            print(f"(linear growth predicts {mem_lens[-1] / mem_lens[0]:.2f}, "
                  f"quadratic {(mem_lens[-1] / mem_lens[0]) ** 2:.2f})")


if __name__ == "__main__":
    main()
