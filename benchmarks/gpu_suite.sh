#!/usr/bin/env bash
# NeuroMamba GPU suite: install on a bare CUDA machine without internet, then run, in one call.
#
#   bash benchmarks/gpu_suite.sh prepare              # on a machine with internet and a python
#                                                     #   with torch: fill .whl/ (wheels, the
#                                                     #   kernels' built without CUDA) and .sdist/
#   bash benchmarks/gpu_suite.sh [run] [suite flags]  # on the GPU machine: install the carried
#                                                     #   files, then run the suite (~9 minutes)
#   bash benchmarks/gpu_suite.sh install              # the install step alone
#   bash benchmarks/gpu_suite.sh run --dry-run        # anywhere: install the carried files into a
#                                                     #   fresh folder, import them, run the suite
#                                                     #   on CPU and print the GPU time estimate
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
#   NM_TOTAL_S [530]              wall seconds for the whole call: the sections get what the
#                                 install leaves (--time_budget_s), in priority order
#   NM_CONV_BUILD_S [150]         seconds the causal-conv1d compile may take; past that (or with no
#                                 nvcc, or 0) Mamba2 runs mamba_ssm's fused scan with the project's
#                                 own conv, and the results say which path ran
#   NM_SKIP_INSTALL [0]           1: run with whatever is importable
#
# mamba-ssm is carried as a wheel built without CUDA (MAMBA_SKIP_CUDA_BUILD): Mamba2 uses only its
# Triton SSD kernels. Its Mamba-1 `selective_scan_cuda` extension, which `import mamba_ssm` needs,
# is replaced by a stand-in module in $NM_SITE: for this suite only, never a user install.
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
# Built here into pure-python wheels, without CUDA (the device has no network to fetch them).
BUILT_WHEELS=(mamba-ssm==2.3.2.post1 deepspeed==0.19.8)
# Compiled on the device if time allows (NM_CONV_BUILD_S); optional.
SDISTS=(causal-conv1d==1.7.0)
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
    # MAMBA_FORCE_BUILD: do not look for a prebuilt CUDA wheel online; SKIP_CUDA: Triton only.
    # DS_BUILD_OPS=0: DeepSpeed JIT-compiles ops on first use; ZeRO-1 with torch's AdamW needs none.
    MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE DS_BUILD_OPS=0 \
        "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WHL_DIR" "${BUILT_WHEELS[@]}"
    # pip runs the sdist's setup.py for metadata: skip the CUDA parts here (no nvcc needed).
    CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
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
    [ -f "$NM_SITE/selective_scan_cuda.py" ] && return 0
    mkdir -p "$NM_SITE"
    cat >"$NM_SITE/selective_scan_cuda.py" <<'PYEOF'
"""Stand-in written by benchmarks/gpu_suite.sh (this suite's install only): the carried mamba-ssm
wheel is built without CUDA, so its Mamba-1 selective-scan extension is absent. `import mamba_ssm`
imports it; NeuroMamba's Mamba2 never calls it (it uses the Triton SSD kernels)."""


def __getattr__(name):
    raise ImportError("selective_scan_cuda is a stand-in: mamba-ssm was built without CUDA")
PYEOF
}

# causal-conv1d is the one compile: bounded by NM_CONV_BUILD_S, skipped without nvcc or sdist.
build_causal_conv1d() {
    local budget="${NM_CONV_BUILD_S:-150}"
    if [ "$budget" -le 0 ] || [ -z "$(sdist_for causal_conv1d)" ] || ! command -v nvcc >/dev/null 2>&1; then
        log "no causal-conv1d compile (NM_CONV_BUILD_S=$budget, sdist carried: $([ -n "$(sdist_for causal_conv1d)" ] && echo yes || echo no), nvcc: $(command -v nvcc >/dev/null 2>&1 && echo yes || echo no))"
        return 0
    fi
    log "compiling causal-conv1d for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST (at most $budget s)"
    local cuda_home; cuda_home="$(make_arch_filtered_cuda_home)"
    export -f log die sdist_for build_sdist
    export PY NM_SITE WHEELHOUSE SDIST_DIR MAX_JOBS TORCH_CUDA_ARCH_LIST
    if timeout "$budget" bash -c "build_sdist causal_conv1d CUDA_HOME='$cuda_home' CAUSAL_CONV1D_FORCE_BUILD=TRUE"; then
        export_built_wheels
    else
        log "causal-conv1d not built within $budget s: the conv runs in PyTorch beside mamba_ssm's fused scan"
    fi
}

install() {
    mkdir -p "$NM_SITE"
    local started=$SECONDS wheels
    mapfile -t wheels < <(wheels_to_install)
    if ((${#wheels[@]})); then
        log "installing ${#wheels[@]} carried wheel(s): $(printf '%s ' "${wheels[@]##*/}")"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$NM_SITE" "${wheels[@]}"
    else
        log "carried wheels: nothing missing"
    fi
    write_selective_scan_stub
    log "wheels installed in $((SECONDS - started)) s"
    local status; status="$(fused_status)"
    if [ "$status" = ok ]; then
        log "fused kernels importable: nothing to build"
    else
        log "fused kernels: $status"
        build_causal_conv1d
    fi
    log "Mamba2 fused path after the install: $(fused_status) (see neuromamba.models.mamba2.FUSED_PATHS)"
}

# The device's install rehearsed on this machine: the carried wheels into a fresh folder, the
# stand-in, and an import of each (mamba_ssm needs Triton and CUDA: on a CPU machine its import
# reports why, which is expected).
dry_run_install() {
    local fresh; fresh="$(mktemp -d /tmp/neuromamba_dry_site.XXXXXX)"
    if [ -d "$WHL_DIR" ] && ls "$WHL_DIR"/*.whl >/dev/null 2>&1; then
        log "dry-run: installing $(ls "$WHL_DIR"/*.whl | wc -l) carried wheels into a fresh $fresh"
        local wheel
        for wheel in "$WHL_DIR"/*.whl; do  # one by one: a cp312-only wheel may not fit this Python
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                --target "$fresh" "$wheel" >/dev/null 2>&1 \
                || log "dry-run: $(basename "$wheel") is not installable by this Python (the device's is $DEVICE_PY_VERSION)"
        done
    else
        log "dry-run: no .whl/ here (run 'bash benchmarks/gpu_suite.sh prepare' to rehearse the install too)"
    fi
    NM_SITE="$fresh" write_selective_scan_stub
    (cd "$REPO" && PYTHONPATH="$fresh:$REPO/project" "$PY" - <<'PYEOF'
import importlib
for name in ("deepspeed", "mamba_ssm", "nibabel", "nilearn", "selective_scan_cuda"):
    try:
        module = importlib.import_module(name)
        print(f"[gpu_suite.sh] dry-run import {name}: ok ({vars(module).get('__version__', 'stand-in')})")
    except Exception as err:
        print(f"[gpu_suite.sh] dry-run import {name}: {type(err).__name__}: {str(err)[:120]}")
PYEOF
    ) >&2
    rm -rf "$fresh"
}

run_suite() {
    mkdir -p "$OUTDIR"
    local dry=0 started=$SECONDS budget_given=0
    for arg in "$@"; do
        [ "$arg" = --dry-run ] && dry=1
        [[ "$arg" == --time_budget_s* ]] && budget_given=1
    done
    if [ "$dry" = 1 ]; then
        dry_run_install 2>&1 | tee -a "$OUTDIR/build.log"
    elif [ "${NM_SKIP_INSTALL:-0}" != 1 ]; then
        # A failed install still runs the suite: the pure-path rows are measured and every
        # fused row records why the kernels do not load.
        install 2>&1 | tee -a "$OUTDIR/build.log" || log "install failed (see build.log); running the suite anyway"
    fi
    local extra=()
    if [ "$budget_given" = 0 ]; then  # the sections get what the install left of NM_TOTAL_S
        local left=$(( ${NM_TOTAL_S:-530} - (SECONDS - started) - 10 ))
        ((left < 60)) && left=60
        extra=(--time_budget_s "$left")
    fi
    log "running: $PY benchmarks/gpu_suite --out $OUTDIR ${extra[*]} $*"
    cd "$REPO"
    PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_suite --out "$OUTDIR" "${extra[@]}" "$@" 2>&1 | tee "$OUTDIR/suite.log"
}

main() {
    export PYTHONPATH="$NM_SITE${PYTHONPATH:+:$PYTHONPATH}"
    set -o pipefail
    local verb="${1:-run}"
    case "$verb" in
        prepare) shift; prepare "$@" ;;
        install) shift; mkdir -p "$OUTDIR"; install 2>&1 | tee -a "$OUTDIR/build.log" ;;
        run) shift; run_suite "$@" ;;
        -h|--help) sed -n '2,33p' "${BASH_SOURCE[0]}" ;;
        *) run_suite "$@" ;;
    esac
}

# Sourcing the file (the tests do) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
