#!/usr/bin/env bash
# NeuroMamba GPU suite: install on a bare CUDA machine without internet, then run, in one call.
#
#   bash benchmarks/gpu_suite.sh prepare          # with internet: fill .whl/ and .sdist/
#   bash benchmarks/gpu_suite.sh [run] [flags]    # on the GPU: install what is carried, run the suite
#   bash benchmarks/gpu_suite.sh run --dry-run    # anywhere: rehearse the install, tiny suite on CPU
#
# Flags go to benchmarks/gpu_suite.py (--sections, --peak_tflops ...). Results: $OUT (default
# /tmp/neuromamba_gpu_suite/results)/results.{md,csv,json} and build.log. Knobs: PYTHON [python3],
# NM_SITE [/tmp/neuromamba_site] (pip --target, first on PYTHONPATH), TORCH_CUDA_ARCH_LIST [9.0],
# MAX_JOBS [16], NM_TOTAL_S [530] (the whole call), NM_CONV_BUILD_S [150] (causal-conv1d compile;
# past it Mamba2 runs mamba_ssm's fused scan with the project's own conv).
#
# mamba-ssm is carried as a wheel built without CUDA: Mamba2 needs only its Triton SSD kernels.
# Its Mamba-1 extension, which `import mamba_ssm` loads, is replaced by a stand-in in $NM_SITE.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
NM_SITE="${NM_SITE:-/tmp/neuromamba_site}"
WHL="$REPO/.whl"
SDIST="$REPO/.sdist"
OUTDIR="${OUT:-/tmp/neuromamba_gpu_suite/results}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
# For the device's Python 3.12: what a stock PyTorch image lacks, at the CPU venv's versions.
WHEELS=(nibabel==5.4.2 nilearn==0.14.1 hjson==3.1.0 pydantic==2.14.3 pydantic-core==2.50.4
        annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0)
BUILT=(mamba-ssm==2.3.2.post1 deepspeed==0.19.8)   # built here, without CUDA
SDISTS=(causal-conv1d==1.7.0)                       # compiled on the device if time allows

log() { echo "[gpu_suite.sh] $*" >&2; }

prepare() {
    mkdir -p "$WHL" "$SDIST"
    local plat=()
    for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_34; do
        plat+=(--platform "${p}_x86_64")
    done
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${plat[@]}" -d "$WHL" "${WHEELS[@]}"
    MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE DS_BUILD_OPS=0 \
        "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WHL" "${BUILT[@]}"
    CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
        "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$SDIST" "${SDISTS[@]}"
    log "prepared $(ls "$WHL" | wc -l) wheels and $(ls "$SDIST" | wc -l) sdists"
}

# Carried wheels whose distribution is missing here, or older.
missing_wheels() {
    [ -d "$WHL" ] || return 0
    "$PY" - "$WHL" <<'EOF'
import importlib.metadata as md, pathlib, sys
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

fused_status() {  # "ok", or why the fused kernels do not load
    (cd "$REPO" && PYTHONPATH="$NM_SITE:$REPO/project" "$PY" -c '
from neuromamba.models.mamba2 import load_fused_ops
ops = load_fused_ops()
print(ops if isinstance(ops, str) else "ok" if ops["causal_conv1d_fn"] else "scan only (no causal_conv1d)")
') 2>/dev/null || echo "python failed"
}

write_stub() {
    mkdir -p "$1"
    printf '%s\n' '"""Stand-in (benchmarks/gpu_suite.sh only): mamba-ssm was built without CUDA."""' \
        'def __getattr__(name):' '    raise ImportError("selective_scan_cuda is a stand-in")' \
        >"$1/selective_scan_cuda.py"
}

# The sdist hard-codes ~9 architectures; a CUDA_HOME whose nvcc keeps only TORCH_CUDA_ARCH_LIST's
# -gencode targets makes the compile fit one call.
arch_filtered_cuda_home() {
    local real shadow archs
    real="$("$PY" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")')"
    [ -x "$real/bin/nvcc" ] || return 1
    archs="$(echo "$TORCH_CUDA_ARCH_LIST" | tr ',;' '  ' | tr -d '.' | sed 's/+PTX//g')"
    shadow="$NM_SITE/.cuda_home"
    rm -rf "$shadow" && mkdir -p "$shadow/bin"
    for e in "$real"/*; do [ "$(basename "$e")" = bin ] || ln -s "$e" "$shadow/"; done
    for t in "$real"/bin/*; do [ "$(basename "$t")" = nvcc ] || ln -s "$t" "$shadow/bin/"; done
    cat >"$shadow/bin/nvcc" <<EOF
#!/usr/bin/env bash
keep=" $archs "; args=()
while ((\$#)); do
    if [ "\$1" = -gencode ]; then a="\${2#*arch=compute_}"; a="\${a%%,*}"
        [[ "\$keep" == *" \$a "* ]] && args+=(-gencode "\$2"); shift 2
    else args+=("\$1"); shift; fi
done
exec "$real/bin/nvcc" "\${args[@]}"
EOF
    chmod +x "$shadow/bin/nvcc"
    echo "$shadow"
}

install() {
    mkdir -p "$NM_SITE"
    local wheels home sdist
    mapfile -t wheels < <(missing_wheels)
    if ((${#wheels[@]})); then
        log "installing ${#wheels[@]} carried wheel(s)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$NM_SITE" "${wheels[@]}"
    fi
    write_stub "$NM_SITE"
    [ "$(fused_status)" = ok ] && { log "fused kernels importable"; return 0; }
    sdist="$(ls -1 "$SDIST"/causal_conv1d-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ "${NM_CONV_BUILD_S:-150}" -gt 0 ] && [ -n "$sdist" ] && home="$(arch_filtered_cuda_home)"; then
        log "compiling $(basename "$sdist") for $TORCH_CUDA_ARCH_LIST (at most ${NM_CONV_BUILD_S:-150} s)"
        timeout "${NM_CONV_BUILD_S:-150}" env CUDA_HOME="$home" CAUSAL_CONV1D_FORCE_BUILD=TRUE \
            "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$NM_SITE" "$sdist" \
            || log "causal-conv1d not built in time: the conv runs in PyTorch beside the fused scan"
    fi
    log "Mamba2 fused path: $(fused_status)"
}

dry_install() {  # the device's install rehearsed into a fresh folder, then each import tried
    local fresh; fresh="$(mktemp -d /tmp/neuromamba_dry_site.XXXXXX)"
    for wheel in "$WHL"/*.whl; do
        [ -f "$wheel" ] || { log "dry-run: no .whl/ (run 'prepare' to rehearse the install too)"; break; }
        "$PY" -m pip install -q --no-index --no-deps --target "$fresh" "$wheel" >/dev/null 2>&1 \
            || log "dry-run: $(basename "$wheel") does not fit this Python (the device's is 3.12)"
    done
    write_stub "$fresh"
    PYTHONPATH="$fresh" "$PY" -c '
import importlib
for name in ("deepspeed", "mamba_ssm", "nibabel", "nilearn", "selective_scan_cuda"):
    try:
        importlib.import_module(name); print(f"[gpu_suite.sh] dry-run import {name}: ok")
    except Exception as err:
        print(f"[gpu_suite.sh] dry-run import {name}: {type(err).__name__}: {str(err)[:100]}")' >&2
    rm -rf "$fresh"
}

run_suite() {
    mkdir -p "$OUTDIR"
    local started=$SECONDS
    if [[ " $* " == *" --dry-run "* ]]; then dry_install 2>&1 | tee -a "$OUTDIR/build.log"
    else install 2>&1 | tee -a "$OUTDIR/build.log" || log "install failed (build.log); running anyway"; fi
    local left=$(( ${NM_TOTAL_S:-530} - (SECONDS - started) - 10 ))
    ((left < 60)) && left=60
    cd "$REPO"
    PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_suite.py --out "$OUTDIR" --time_budget_s "$left" "$@" \
        2>&1 | tee "$OUTDIR/suite.log"
}

export PYTHONPATH="$NM_SITE:$REPO/project${PYTHONPATH:+:$PYTHONPATH}"
set -o pipefail
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # sourcing (the tests) only defines the functions
    case "${1:-run}" in
        prepare) shift; prepare ;;
        install) install ;;
        run) shift; run_suite "$@" ;;
        -h|--help) sed -n '2,15p' "$0" ;;
        *) run_suite "$@" ;;
    esac
fi
