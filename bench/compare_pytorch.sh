#!/usr/bin/env bash
# arjit against eager PyTorch (Debian 12's python3-torch, CPU) on the same
# training step: NADE (D=784, H=500), FVSBN (D=784), MADE (D=784, H=500) and
# PixelCNN (28x28, 64 channels, 5 blocks), one Adam step on a batch of binary images, same batch and threads. bench/README.md says what
# is compared and how.
#
#   bench/compare_pytorch.sh [--threads 1] [--batch 100] [--steps 20] [--malloc both] [--check]
#
# Installs python3-torch if /usr/bin/python3 cannot import torch, builds
# arjit if needed, then runs, one at a time, `arjit bench --engine fused`
# and bench/pytorch/{nade,fvsbn,made,pixelcnn}.py, with glibc's malloc as it comes and
# tuned (both sides alike), and prints a table. Exit status: 0
# done, 1 a failure (build, install, a run, or --check's comparison), 2 a
# bad command line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=/usr/bin/python3
ME=bench/compare_pytorch.sh

usage() {
    cat <<EOF
usage: $ME [FLAGS]

Times one Adam training step of NADE, FVSBN, MADE and PixelCNN: arjit's fused JIT engine
(arjit bench) against eager PyTorch (bench/pytorch/*.py), then prints
ms/step (median of --steps after 2 warm-up steps) and PyTorch/arjit.

flags:
  --threads N        threads for both: arjit's OpenMP team, torch.set_num_threads; default 1
  --batch B          examples per step; default 100
  --steps N          timed steps per run; default 20
  --blas-threads N   OpenBLAS threads under PyTorch (its own pool); default 1 (bench/README.md)
  --malloc MODE      default, tuned or both (the default), for arjit and PyTorch alike:
                     glibc's malloc as it comes, or MALLOC_MMAP_THRESHOLD_ =
                     MALLOC_TRIM_THRESHOLD_ = 4e9 (big blocks reused, not mmapped
                     and page-faulted in afresh on every step)
  --build-dir DIR    where arjit is built; default build (or \$ARJIT_BUILD)
  --no-build         do not build: use DIR/arjit as it is, fail if it is missing
  --check            first, check that both compute the same function: train each
                     model for a few steps, then compare arjit eval and PyTorch's
                     NLL of the same checkpoint on 1000 test images (< 1e-3 nats)
  --json FILE        also write every run's JSON (one object per line) to FILE
  -h, --help         show this help

Data for --check: binarized MNIST in \$ARJIT_DATA, ./data or ../shared/data.
EOF
}

die() { echo "$ME: error: $*" >&2; exit 1; }
bad() { echo "$ME: $*; see '$ME --help'" >&2; exit 2; }

threads=1 batch=100 steps=20 blas=1 malloc=both build=${ARJIT_BUILD:-build}
nobuild=0 check=0 jsonout=
need_val() { (($1 >= 2)) || bad "flag '$2' needs a value"; }
posint() { [[ $2 =~ ^[1-9][0-9]{0,6}$ ]] || bad "$1 wants a positive integer, got '$2'"; }
while (($#)); do
    case $1 in
        --threads)      need_val $# "$1"; posint "$1" "$2"; threads=$2; shift 2 ;;
        --batch)        need_val $# "$1"; posint "$1" "$2"; batch=$2; shift 2 ;;
        --steps)        need_val $# "$1"; posint "$1" "$2"; steps=$2; shift 2 ;;
        --blas-threads) need_val $# "$1"; posint "$1" "$2"; blas=$2; shift 2 ;;
        --build-dir)    need_val $# "$1"; build=$2; shift 2 ;;
        --json)         need_val $# "$1"; jsonout=$2; shift 2 ;;
        --malloc)       need_val $# "$1"; malloc=$2; shift 2
                        [[ $malloc =~ ^(default|tuned|both)$ ]] || bad "--malloc wants default, tuned or both, got '$malloc'" ;;
        --no-build)     nobuild=1; shift ;;
        --check)        check=1; shift ;;
        -h|--help)      usage; exit 0 ;;
        *)              bad "unknown flag '$1'" ;;
    esac
done
ARJIT=$build/arjit
models=(nade fvsbn made pixelcnn)

# --- PyTorch: Debian's package, installed like tests/setup-deps.sh does ---------
if ! "$PY" -c 'import torch' 2>/dev/null; then
    [[ -x $PY ]] || die "$PY not found: this compares against Debian 12's python3-torch"
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "$PY cannot import torch; run as root to install python3-torch"
        sudo=(sudo)
    fi
    echo "$ME: installing python3-torch"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends python3-torch || die "apt-get install python3-torch failed"
    "$PY" -c 'import torch' || die "python3-torch is installed but $PY still cannot import torch"
fi

# --- arjit: built as examples/quickstart.sh does (incremental) -------------------
if ((nobuild)); then
    [[ -x $ARJIT ]] || die "no arjit at $ARJIT (build it: cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release && cmake --build $build; or drop --no-build)"
else
    if [[ ! -f $build/CMakeCache.txt ]]; then
        . tests/setup-deps.sh
        arjit_setup_deps || die "missing build dependencies (tests/setup-deps.sh)"
        cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure of $build failed"
    fi
    echo "$ME: building arjit in $build"
    cmake --build "$build" --target arjit_cli -j "${JOBS:-2}" >/dev/null \
        || die "building arjit in $build failed (run: cmake --build $build)"
    [[ -x $ARJIT ]] || die "the build finished but there is no $ARJIT"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/all.json"

# --- --check: the same function, on the same checkpoint -------------------------
if ((check)); then
    echo "== check: arjit eval and PyTorch on the same checkpoints (1000 test images)"
    test_file=
    for d in ${ARJIT_DATA:+"$ARJIT_DATA"} data ../shared/data; do
        for f in "$d/binarized_mnist_test.amat" "$d/binarized_mnist_test.amat.gz"; do
            [[ -f $f ]] && { test_file=$f; break 2; }
        done
    done
    [[ -n $test_file ]] || die "--check: binarized_mnist_test.amat[.gz] not found in \$ARJIT_DATA, ./data or ../shared/data"
    mkdir "$tmp/small"
    # arjit eval takes the file by name from $ARJIT_DATA: give it the first 1000 test images
    { if [[ $test_file == *.gz ]]; then gzip -dc "$test_file"; else cat "$test_file"; fi; } \
        | head -n 1000 >"$tmp/small/binarized_mnist_test.amat" || true
    fails=0
    for m in "${models[@]}"; do
        lr=3e-3; [[ $m == fvsbn ]] && lr=1e-2; [[ $m == pixelcnn ]] && lr=1e-3
        "$ARJIT" train "models/$m.graph" --data mnist-bin --epochs 1 --max-steps 20 --lr "$lr" \
            --seed 1 --threads 1 --save "$tmp/$m.ckpt" >"$tmp/train.log" 2>&1 \
            || { cat "$tmp/train.log" >&2; die "arjit train $m failed"; }
        a_out=$(ARJIT_DATA=$tmp/small "$ARJIT" eval "models/$m.graph" --ckpt "$tmp/$m.ckpt" --split test) \
            || die "arjit eval $m failed"
        p_out=$("$PY" "bench/pytorch/$m.py" --ckpt "$tmp/$m.ckpt" --data "$tmp/small/binarized_mnist_test.amat" \
                --threads "$threads" --blas-threads "$blas") || die "bench/pytorch/$m.py --ckpt failed"
        echo "$p_out" >>"$tmp/all.json"
        "$PY" - "$m" "$a_out" "$p_out" <<'EOF' || fails=1
import json, re, sys
m, a_out, p_out = sys.argv[1:]
a = float(re.search(r"test NLL ([0-9.eE+-]+)", a_out).group(1))
p = json.loads(p_out)
worst = 0.0
parts = []
for v, nll in p["nll"].items():
    parts.append(f"PyTorch {v} {nll:.6f}")
    if not v.endswith("f64"):
        worst = max(worst, abs(nll - a))
ok = worst < 1e-3
print(f"{m:6s} arjit eval {a:.4f} (printed to 4 decimals)  " + "  ".join(parts)
      + f"  |diff| {worst:.2e} nats: {'ok' if ok else 'FAILED (>= 1e-3)'}")
sys.exit(0 if ok else 1)
EOF
    done
    ((fails == 0)) || die "--check: arjit and PyTorch disagree"
    echo
fi

# --- the timings, one run at a time ---------------------------------------------
TUNED=4000000000   # as bench/pytorch/common.py
modes=(default tuned)
[[ $malloc != both ]] && modes=("$malloc")
for m in "${models[@]}"; do
    for mode in "${modes[@]}"; do
        env=(env -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_) pyflag=()
        if [[ $mode == tuned ]]; then
            env+=(MALLOC_MMAP_THRESHOLD_=$TUNED MALLOC_TRIM_THRESHOLD_=$TUNED)
            pyflag=(--tuned-malloc)
        fi
        echo "$ME: timing $m ($mode malloc): arjit fused, then PyTorch" >&2
        "${env[@]}" "$ARJIT" bench "models/$m.graph" --engine fused --json --threads "$threads" \
            --batch "$batch" --steps "$steps" >"$tmp/$m.$mode.arjit.json" \
            || die "arjit bench models/$m.graph failed"
        "${env[@]}" "$PY" "bench/pytorch/$m.py" --threads "$threads" --blas-threads "$blas" \
            --batch "$batch" --steps "$steps" "${pyflag[@]}" >"$tmp/$m.$mode.torch.json" \
            || die "bench/pytorch/$m.py failed"
    done
done

"$PY" - "$tmp" "$threads" "$blas" "$batch" "$steps" "${models[*]}" "${modes[@]}" <<'EOF'
import json, os, subprocess, sys
tmp, threads, blas, batch, steps, models, *modes = sys.argv[1:]
models = models.split()
allj = open(os.path.join(tmp, "all.json"), "a")
try:
    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
                         capture_output=True, text=True).stdout.strip()
except OSError:
    deb = ""
rows = []
for m in models:
    for mode in modes:
        a = json.load(open(os.path.join(tmp, f"{m}.{mode}.arjit.json")))
        p = json.loads(open(os.path.join(tmp, f"{m}.{mode}.torch.json")).read())
        a["malloc"] = p["malloc"]
        allj.write(json.dumps(a) + "\n" + json.dumps(p) + "\n")
        af = next(e for e in a["engines"] if e["engine"] == "fused")
        rows.append((m, mode, af, p))
torch_ver = rows[0][3]["torch"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")


def cell(v):
    return "-" if v is None else f"{v['ms_median']:.2f} [{v['ms_min']:.1f}-{v['ms_max']:.1f}]"


print(f"Adam training step, ms/step: median [min-max] of {steps} steps after 2 warm-up; "
      f"batch {batch}, {threads} thread(s)")
print(f"arjit: --engine fused; PyTorch {torch_ver} (Debian python3-torch {deb or '?'}), eager, "
      f"OpenBLAS threads {blas}; CPU: {cpu}, {os.cpu_count()} cores")
print("malloc, for both: default = glibc as it comes; tuned = MALLOC_MMAP_THRESHOLD_ = "
      "MALLOC_TRIM_THRESHOLD_ = 4e9")
hdr = ("model", "malloc", "arjit fused", "PyTorch loop", "PyTorch vectorised", "PyTorch/arjit")
table = []
for m, mode, af, p in rows:
    v = p["variants"]
    table.append((m, mode, cell(af), cell(v.get("loop")), cell(v.get("vectorised")),
                  f"{p['ms_median'] / af['ms_median']:.2f}x ({p['best']})"))
w = [max(len(r[i]) for r in [hdr] + table) for i in range(len(hdr))]
for r in [hdr] + table:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
print("PyTorch/arjit: the faster PyTorch variant's median over arjit's, same malloc (> 1: arjit is faster)")
if len(modes) > 1:
    for m in models:
        mine = [r for r in rows if r[0] == m]
        a = min(mine, key=lambda r: r[2]["ms_median"])
        p = min(mine, key=lambda r: r[3]["ms_median"])
        print(f"best of each, {m}: arjit {a[2]['ms_median']:.2f} ms ({a[1]} malloc), PyTorch "
              f"{p[3]['ms_median']:.2f} ms ({p[3]['best']}, {p[1]} malloc): "
              f"{p[3]['ms_median'] / a[2]['ms_median']:.2f}x")
EOF

if [[ -n $jsonout ]]; then
    cp "$tmp/all.json" "$jsonout" || die "cannot write $jsonout"
fi
