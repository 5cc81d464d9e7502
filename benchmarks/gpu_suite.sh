#!/usr/bin/env bash
# NeuroMamba GPU suite (issue 6): install on a bare CUDA machine without internet, then run.
#
#   bash benchmarks/gpu_suite.sh prepare              # HERE (internet, a python with torch):
#                                                     #   fill .whl/ and .sdist/ (git-ignored)
#   bash benchmarks/gpu_suite.sh install              # DEVICE: carried wheels + kernel builds
#   bash benchmarks/gpu_suite.sh [run] [suite flags]  # DEVICE: install if needed, run the suite
#   bash benchmarks/gpu_suite.sh run --dry-run        # ANYWHERE: CPU dry-run, nothing installed
#
# Suite flags go to `python benchmarks/gpu_suite` (see --help): --sections, --out, --peak_tflops ...
# Results: $OUT (default /tmp/neuromamba_gpu_suite/results)/results.{md,csv,json}, suite.log and
# build.log. See benchmarks/README_gpu.md for the device `run` command and what each column means.
#
# Environment knobs (defaults in brackets):
#   PYTHON [python3]              interpreter that has torch (the image's)
#   NM_SITE [/tmp/neuromamba_site] pip --target folder for everything installed; put first on
#                                 PYTHONPATH. /tmp survives between calls while the machine is warm,
#                                 so a second call finds the kernels built and skips the build.
#   TORCH_CUDA_ARCH_LIST [9.0]    GPU architectures the kernels are compiled for (H100/H200: 9.0)
#   MAX_JOBS [16]                 parallel compile jobs
#   NM_SKIP_SELECTIVE_SCAN [0]    1: build mamba-ssm without its Mamba-1 selective-scan CUDA
#                                 extension (a stub raises on use); Mamba2 never calls it. A
#                                 fallback for when the full build does not fit a 10-minute call.
#   NM_SKIP_INSTALL [0]           1: run with whatever is importable
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
NM_SITE="${NM_SITE:-/tmp/neuromamba_site}"
WHL_DIR="$REPO/.whl"
SDIST_DIR="$REPO/.sdist"
WHEELHOUSE="$NM_SITE/.wheelhouse"
OUTDIR="${OUT:-/tmp/neuromamba_gpu_suite/results}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"

# What `prepare` fetches. Pure-python wheels (and pydantic-core's cp312 build) for the device's
# Python 3.12: the project's runtime deps that the device image lacks (see README_gpu.md), at the
# versions the CPU venv is tested with. Sdists: the fused kernels and DeepSpeed (sdist-only).
WHEELS=(nibabel==5.4.2 nilearn==0.14.1 hjson==3.1.0 pydantic==2.14.3 pydantic-core==2.50.4
        annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0)
SDISTS=(mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0 deepspeed==0.19.8)
DEVICE_PY_VERSION=3.12

log() { echo "[gpu_suite.sh] $*" >&2; }
die() { log "error: $*"; exit 2; }

prepare() {
    mkdir -p "$WHL_DIR" "$SDIST_DIR"
    local platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
             manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$p")
    done
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$DEVICE_PY_VERSION" \
        --implementation cp "${platforms[@]}" -d "$WHL_DIR" "${WHEELS[@]}"
    # pip runs each sdist's setup.py for metadata: skip the CUDA parts here (no nvcc needed).
    MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE DS_BUILD_OPS=0 \
        "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$SDIST_DIR" "${SDISTS[@]}"
    log "prepared: $(ls "$WHL_DIR" | wc -l) wheels in .whl/, $(ls "$SDIST_DIR" | wc -l) sdists in .sdist/ ($(du -sh "$WHL_DIR" "$SDIST_DIR" | awk '{print $1}' | paste -sd+))"
}

# Carried wheels whose distribution is missing from the interpreter (or older there).
wheels_to_install() {
    [ -d "$WHL_DIR" ] || return 0
    "$PY" - "$WHL_DIR" <<'EOF'
import importlib.metadata as md
import pathlib
import sys

from packaging.version import Version

for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or Version(have) < Version(version):
        print(wheel)
EOF
}

sdist_for() {  # newest carried sdist of a distribution (file names use underscores)
    ls -1 "$SDIST_DIR"/"$1"-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true
}

fused_status() {  # prints "ok" or why the fused kernels do not load
    (cd "$REPO" && "$PY" - <<'EOF'
import sys
sys.path.insert(0, "project")
from neuromamba.models.mamba2 import load_fused_ops
ops = load_fused_ops()
if isinstance(ops, str):
    print(ops)
else:  # mamba_ssm's scan alone still runs fused; the conv needs causal_conv1d
    print("ok" if ops["causal_conv1d_fn"] is not None else "causal_conv1d missing (scan only)")
EOF
    ) 2>/dev/null || echo "python failed"
}

# A CUDA_HOME whose nvcc drops every -gencode target outside TORCH_CUDA_ARCH_LIST: both sdists
# hard-code ~9 architectures (sm_75 .. sm_121 on CUDA 13), which would take far longer than one
# 10-minute call to compile; everything else is the real toolkit, through symlinks.
make_arch_filtered_cuda_home() {
    local real_home shadow archs
    real_home="$("$PY" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")')"
    [ -n "$real_home" ] && [ -x "$real_home/bin/nvcc" ] || die "no nvcc found (torch CUDA_HOME='$real_home')"
    archs="$(echo "$TORCH_CUDA_ARCH_LIST" | tr ',;' '  ' | tr -d '.' | sed 's/+PTX//g')"
    shadow="$NM_SITE/.cuda_home"
    rm -rf "$shadow" && mkdir -p "$shadow/bin"
    for entry in "$real_home"/*; do
        [ "$(basename "$entry")" = bin ] || ln -s "$entry" "$shadow/$(basename "$entry")"
    done
    for tool in "$real_home"/bin/*; do ln -s "$tool" "$shadow/bin/$(basename "$tool")"; done
    rm "$shadow/bin/nvcc"
    cat >"$shadow/bin/nvcc" <<EOF
#!/usr/bin/env bash
# Written by benchmarks/gpu_suite.sh: the real nvcc, keeping only -gencode targets for: $archs
keep=" $archs "
args=(); had=0; kept=0
add() { local a="\${1#*arch=compute_}"; a="\${a%%,*}"; a="\${a%a}"; had=1
        if [[ "\$keep" == *" \$a "* ]]; then args+=(-gencode "\$1"); kept=1; fi; }
while ((\$#)); do
    case "\$1" in
        -gencode) add "\$2"; shift 2 ;;
        -gencode=*|--generate-code=*) add "\${1#*=}"; shift ;;
        *) args+=("\$1"); shift ;;
    esac
done
if ((had && !kept)); then for a in \$keep; do args+=(-gencode "arch=compute_\$a,code=sm_\$a"); done; fi
exec "$real_home/bin/nvcc" "\${args[@]}"
EOF
    chmod +x "$shadow/bin/nvcc"
    echo "$shadow"
}

# Build a carried sdist into a wheel (kept in $WHEELHOUSE), then install that wheel.
build_sdist() {  # name, extra env assignments...
    local name="$1"; shift
    local sdist; sdist="$(sdist_for "$name")"
    [ -n "$sdist" ] || die "no .sdist/$name-*.tar.gz carried (run 'bash benchmarks/gpu_suite.sh prepare' here first)"
    log "building $(basename "$sdist") (MAX_JOBS=$MAX_JOBS, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
    local started=$SECONDS
    mkdir -p "$WHEELHOUSE"
    env "$@" "$PY" -m pip wheel --no-index --no-deps --no-build-isolation --no-cache-dir \
        -w "$WHEELHOUSE" "$sdist"
    local wheel; wheel="$(ls -1t "$WHEELHOUSE/$name"-*.whl | head -n 1)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$NM_SITE" "$wheel"
    log "built and installed $(basename "$wheel") in $((SECONDS - started)) s"
}

# The kernels' wheels go back with the results when small enough to fetch (16 MiB a file):
# put them in .whl/ for the next session and its install skips the build.
export_built_wheels() {
    mkdir -p "$OUTDIR/wheels"
    local wheel size
    for wheel in "$WHEELHOUSE"/causal_conv1d-*.whl "$WHEELHOUSE"/mamba_ssm-*.whl; do
        [ -f "$wheel" ] || continue
        size=$(stat -c %s "$wheel")
        if ((size <= 16 * 1024 * 1024)); then
            cp "$wheel" "$OUTDIR/wheels/" && log "exported $(basename "$wheel") ($((size / 1024)) KiB) to \$OUT/wheels"
        else
            log "not exporting $(basename "$wheel"): $((size / 1024 / 1024)) MiB is over the 16 MiB fetch limit"
        fi
    done
}

write_selective_scan_stub() {
    cat >"$NM_SITE/selective_scan_cuda.py" <<'EOF'
"""Stub written by benchmarks/gpu_suite.sh with NM_SKIP_SELECTIVE_SCAN=1: mamba_ssm's Mamba-1
selective-scan CUDA extension was not built. NeuroMamba's Mamba2 never calls it."""


def __getattr__(name):
    raise ImportError("selective_scan_cuda was not built (NM_SKIP_SELECTIVE_SCAN=1)")
EOF
}

install() {
    mkdir -p "$NM_SITE"
    local wheels
    mapfile -t wheels < <(wheels_to_install)
    if ((${#wheels[@]})); then
        log "installing ${#wheels[@]} carried wheel(s): $(printf '%s ' "${wheels[@]##*/}")"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$NM_SITE" "${wheels[@]}"
    else
        log "carried wheels: nothing missing"
    fi
    if [ "${NM_SKIP_SELECTIVE_SCAN:-0}" = 1 ]; then
        write_selective_scan_stub
    fi
    if ! "$PY" -c 'import deepspeed' >/dev/null 2>&1; then
        # Pure-python install: DeepSpeed JIT-compiles ops on first use; ZeRO-1 + torch AdamW needs none.
        build_sdist deepspeed DS_BUILD_OPS=0
    fi
    local status; status="$(fused_status)"
    if [ "$status" = ok ]; then
        log "fused kernels already importable: skipping the build"
        return 0
    fi
    log "fused kernels not importable yet ($status): building"
    local cuda_home; cuda_home="$(make_arch_filtered_cuda_home)"
    build_sdist causal_conv1d CUDA_HOME="$cuda_home" CAUSAL_CONV1D_FORCE_BUILD=TRUE
    if [ "${NM_SKIP_SELECTIVE_SCAN:-0}" = 1 ]; then
        build_sdist mamba_ssm CUDA_HOME="$cuda_home" MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE
    else
        build_sdist mamba_ssm CUDA_HOME="$cuda_home" MAMBA_FORCE_BUILD=TRUE
    fi
    export_built_wheels
    status="$(fused_status)"
    [ "$status" = ok ] || die "fused kernels still do not load after the build: $status"
    log "fused kernels load"
}

run_suite() {
    mkdir -p "$OUTDIR"
    local dry=0
    for arg in "$@"; do [ "$arg" = --dry-run ] && dry=1; done
    if [ "$dry" = 0 ] && [ "${NM_SKIP_INSTALL:-0}" != 1 ]; then
        # A failed install still runs the suite: the pure-path rows are measured and every
        # fused row records why the kernels do not load.
        install 2>&1 | tee -a "$OUTDIR/build.log" || log "install failed (see build.log); running the suite anyway"
    fi
    log "running: $PY benchmarks/gpu_suite --out $OUTDIR $*"
    cd "$REPO"
    PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_suite --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/suite.log"
}

main() {
    export PYTHONPATH="$NM_SITE${PYTHONPATH:+:$PYTHONPATH}"
    set -o pipefail
    local verb="${1:-run}"
    case "$verb" in
        prepare) shift; prepare "$@" ;;
        install) shift; mkdir -p "$OUTDIR"; install 2>&1 | tee -a "$OUTDIR/build.log" ;;
        run) shift; run_suite "$@" ;;
        -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" ;;
        *) run_suite "$@" ;;
    esac
}

# Sourcing the file (the tests do) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
