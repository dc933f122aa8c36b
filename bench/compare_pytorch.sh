#!/usr/bin/env bash
# arjit against eager PyTorch (Debian 12's python3-torch, CPU) on the same
# training step, one Adam step, same batch and threads:
#   binary images (the default set): NADE (D=784, H=500), FVSBN (D=784),
#     MADE (D=784, H=500), PixelCNN (28x28, 64 channels, 5 blocks); batch 100
#   byte sequences (--seq): RNN, LSTM, GRU (E=64, H=256) and GPT (E=128,
#     4 layers, 4 heads), T=64 bytes of a 65-byte vocabulary; batch 32
# bench/README.md says what is compared and how.
#
#   bench/compare_pytorch.sh [--models LIST | --seq] [--threads 1] [--batch B] [--steps 20] [--malloc both] [--check]
#
# Installs python3-torch (and OpenBLAS, which it calls) if needed, builds
# arjit if needed, then runs, one at a time, `arjit bench --engine fused`
# and bench/pytorch/MODEL.py, with glibc's malloc as it comes and tuned
# (both sides alike), and prints a table. Exit status: 0 done, 1 a failure
# (build, install, a run, or --check's comparison), 2 a bad command line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=/usr/bin/python3
ME=bench/compare_pytorch.sh

usage() {
    cat <<EOF
usage: $ME [FLAGS]

Times one Adam training step of each model: arjit's fused JIT engine
(arjit bench models/MODEL.graph) against eager PyTorch (bench/pytorch/MODEL.py),
then prints ms/step (median of --steps after 2 warm-up steps) and PyTorch/arjit.

flags:
  --models LIST      comma-separated models, or a group: image = nade,fvsbn,made,pixelcnn
                     (binary images, the default), seq = rnn,lstm,gru,gpt (byte
                     sequences, T = 64), all = both groups
  --seq              the same as --models seq
  --threads N        threads for both: arjit's OpenMP team, torch.set_num_threads; default 1
  --batch B          examples per step, for every model; default per model: 100 for the
                     image models, 32 windows of T bytes for the sequence models
  --steps N          timed steps per run; default 20
  --blas-threads N   OpenBLAS threads under PyTorch (its own pool); default 1 (bench/README.md)
  --malloc MODE      default, tuned or both (the default), for arjit and PyTorch alike:
                     glibc's malloc as it comes, or MALLOC_MMAP_THRESHOLD_ =
                     MALLOC_TRIM_THRESHOLD_ = 4e9 (big blocks reused, not mmapped
                     and page-faulted in afresh on every step)
  --build-dir DIR    where arjit is built; default build (or \$ARJIT_BUILD)
  --no-build         do not build: use DIR/arjit as it is, fail if it is missing
  --check            first, check that both compute the same function: train each
                     model for 20 steps, then compare arjit eval and PyTorch's
                     NLL of the same checkpoint (< 1e-3 nats): on 1000 test images,
                     or per character on the test split (the last 10%) of the first
                     200000 bytes of Tiny Shakespeare
  --json FILE        also write every run's JSON (one object per line) to FILE
  -h, --help         show this help

Data for --check: binarized MNIST (image models) and tinyshakespeare.txt
(sequence models) in \$ARJIT_DATA, ./data or ../shared/data.
EOF
}

die() { echo "$ME: error: $*" >&2; exit 1; }
bad() { echo "$ME: $*; see '$ME --help'" >&2; exit 2; }

threads=1 batch= steps=20 blas=1 malloc=both build=${ARJIT_BUILD:-build}
nobuild=0 check=0 jsonout= modelarg=image
image_models=(nade fvsbn made pixelcnn)
seq_models=(rnn lstm gru gpt)
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
        --models)       need_val $# "$1"; modelarg=$2; shift 2 ;;
        --seq)          modelarg=seq; shift ;;
        --no-build)     nobuild=1; shift ;;
        --check)        check=1; shift ;;
        -h|--help)      usage; exit 0 ;;
        *)              bad "unknown flag '$1'" ;;
    esac
done
ARJIT=$build/arjit

# --models: names and groups, in the order given, each model once
models=()
is_seq() { [[ " ${seq_models[*]} " == *" $1 "* ]]; }
add_model() { [[ " ${models[*]} " == *" $1 "* ]] || models+=("$1"); }
[[ -n $modelarg ]] || bad "--models wants a list, got ''"
IFS=, read -r -a wanted <<<"$modelarg"
[[ $modelarg != *, && $modelarg != ,* && $modelarg != *,,* ]] || bad "--models: empty name in '$modelarg'"
for w in "${wanted[@]}"; do
    case $w in
        image) for m in "${image_models[@]}"; do add_model "$m"; done ;;
        seq)   for m in "${seq_models[@]}"; do add_model "$m"; done ;;
        all)   for m in "${image_models[@]}" "${seq_models[@]}"; do add_model "$m"; done ;;
        *)     [[ " ${image_models[*]} ${seq_models[*]} " == *" $w "* ]] \
                   || bad "--models: unknown model '$w' (known: ${image_models[*]} ${seq_models[*]}, or image, seq, all)"
               add_model "$w" ;;
    esac
done
# the batch of each model: --batch, else the model's default
batch_of() { if [[ -n $batch ]]; then echo "$batch"; elif is_seq "$1"; then echo 32; else echo 100; fi; }

# --- PyTorch: Debian's package, installed like tests/setup-deps.sh does ---------
# Debian's torch does its matrix products through libblas.so.3, which is the
# reference BLAS (netlib, unoptimised: 10x slower and more here) unless an
# optimised one is installed: install OpenBLAS (pthread build) with it.
apt_install() {
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "$1; run as root to install $2"
        sudo=(sudo)
    fi
    echo "$ME: installing ${*:2}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${@:2}" || die "apt-get install ${*:2} failed"
}
if ! "$PY" -c 'import torch' 2>/dev/null; then
    [[ -x $PY ]] || die "$PY not found: this compares against Debian 12's python3-torch"
    apt_install "$PY cannot import torch" python3-torch libopenblas0-pthread
    "$PY" -c 'import torch' || die "python3-torch is installed but $PY still cannot import torch"
fi
LIBBLAS=/usr/lib/x86_64-linux-gnu/libblas.so.3
if [[ -e $LIBBLAS && $(readlink -f "$LIBBLAS") == */blas/libblas.so.3* ]]; then
    apt_install "torch would call the reference BLAS ($(readlink -f "$LIBBLAS"))" libopenblas0-pthread
fi
blaslib=$(readlink -f "$LIBBLAS" 2>/dev/null || echo "?")

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
find_file() {   # the first of NAME[.gz] in $ARJIT_DATA, ./data, ../shared/data
    local d f
    for d in ${ARJIT_DATA:+"$ARJIT_DATA"} data ../shared/data; do
        for f in "$d/$1" "$d/$1.gz"; do
            [[ -f $f ]] && { echo "$f"; return 0; }
        done
    done
    die "--check: $1[.gz] not found in \$ARJIT_DATA, ./data or ../shared/data"
}
if ((check)); then
    echo "== check: arjit eval and PyTorch on the same checkpoints (1000 test images; the test split of 200000 bytes of text)"
    mkdir "$tmp/small"
    test_file= text_file=
    for m in "${models[@]}"; do
        if is_seq "$m"; then
            [[ -n $text_file ]] && continue
            text_file=$(find_file tinyshakespeare.txt)
            # a smaller text:FILE to score: its last 10% (20000 bytes, 312 windows of 64 + 1)
            { if [[ $text_file == *.gz ]]; then gzip -dc "$text_file"; else cat "$text_file"; fi; } \
                | head -c 200000 >"$tmp/small/shakespeare_head.txt" || true
        elif [[ -z $test_file ]]; then
            test_file=$(find_file binarized_mnist_test.amat)
            # arjit eval takes the file by name from $ARJIT_DATA: give it the first 1000 test images
            { if [[ $test_file == *.gz ]]; then gzip -dc "$test_file"; else cat "$test_file"; fi; } \
                | head -n 1000 >"$tmp/small/binarized_mnist_test.amat" || true
        fi
    done
    fails=0
    for m in "${models[@]}"; do
        case $m in
            fvsbn) lr=1e-2 ;;
            pixelcnn|gpt) lr=1e-3 ;;
            rnn|lstm|gru) lr=2e-3 ;;
            *) lr=3e-3 ;;
        esac
        if is_seq "$m"; then
            data=shakespeare eval_data=(--data "text:$tmp/small/shakespeare_head.txt")
            py_data=$tmp/small/shakespeare_head.txt
        else
            data=mnist-bin eval_data=() py_data=$tmp/small/binarized_mnist_test.amat
        fi
        "$ARJIT" train "models/$m.graph" --data "$data" --epochs 1 --max-steps 20 --lr "$lr" \
            --seed 1 --threads 1 --save "$tmp/$m.ckpt" >"$tmp/train.log" 2>&1 \
            || { cat "$tmp/train.log" >&2; die "arjit train $m failed"; }
        a_out=$(ARJIT_DATA=$tmp/small "$ARJIT" eval "models/$m.graph" --ckpt "$tmp/$m.ckpt" --split test \
                "${eval_data[@]}") || die "arjit eval $m failed"
        p_out=$("$PY" "bench/pytorch/$m.py" --ckpt "$tmp/$m.ckpt" --data "$py_data" \
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
unit = " nats/char" if "windows" in p else ""
print(f"{m:8s} arjit eval {a:.4f}{unit} (printed to 4 decimals)  " + "  ".join(parts)
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
    b=$(batch_of "$m")
    for mode in "${modes[@]}"; do
        env=(env -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_) pyflag=()
        if [[ $mode == tuned ]]; then
            env+=(MALLOC_MMAP_THRESHOLD_=$TUNED MALLOC_TRIM_THRESHOLD_=$TUNED)
            pyflag=(--tuned-malloc)
        fi
        echo "$ME: timing $m ($mode malloc): arjit fused, then PyTorch" >&2
        "${env[@]}" "$ARJIT" bench "models/$m.graph" --engine fused --json --threads "$threads" \
            --batch "$b" --steps "$steps" >"$tmp/$m.$mode.arjit.json" \
            || die "arjit bench models/$m.graph failed"
        "${env[@]}" "$PY" "bench/pytorch/$m.py" --threads "$threads" --blas-threads "$blas" \
            --batch "$b" --steps "$steps" "${pyflag[@]}" >"$tmp/$m.$mode.torch.json" \
            || die "bench/pytorch/$m.py failed"
    done
done

"$PY" - "$tmp" "$threads" "$blas" "$steps" "$blaslib" "${models[*]}" "${modes[@]}" <<'EOF'
import json, math, os, subprocess, sys
tmp, threads, blas, steps, blaslib, models, *modes = sys.argv[1:]
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
        rows.append((m, mode, af, p, a))
torch_ver = rows[0][3]["torch"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
# the PyTorch formulations, a column each: every script's first one (written
# out by hand: loop, explicit), then its second (vectorised, module)
variants = []
for i in range(max(len(r[3]["variants"]) for r in rows)):
    for r in rows:
        vs = list(r[3]["variants"])
        if i < len(vs) and vs[i] not in variants:
            variants.append(vs[i])


def cell(v):
    return "-" if v is None else f"{v['ms_median']:.2f} [{v['ms_min']:.1f}-{v['ms_max']:.1f}]"


print(f"Adam training step, ms/step: median [min-max] of {steps} steps after 2 warm-up; {threads} thread(s)")
print(f"arjit: --engine fused; PyTorch {torch_ver} (Debian python3-torch {deb or '?'}), eager, "
      f"BLAS {blaslib}, OpenBLAS threads {blas}; CPU: {cpu}, {os.cpu_count()} cores")
print("malloc, for both: default = glibc as it comes; tuned = MALLOC_MMAP_THRESHOLD_ = "
      "MALLOC_TRIM_THRESHOLD_ = 4e9")
hdr = ("model", "batch", "malloc", "arjit fused") + tuple(f"PyTorch {v}" for v in variants) + ("PyTorch/arjit",)
table = []
for m, mode, af, p, a in rows:
    table.append((m, str(p["batch"]), mode, cell(af)) + tuple(cell(p["variants"].get(v)) for v in variants)
                 + (f"{p['ms_median'] / af['ms_median']:.2f}x ({p['best']})",))
w = [max(len(r[i]) for r in [hdr] + table) for i in range(len(hdr))]
for r in [hdr] + table:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
print("PyTorch/arjit: the faster PyTorch variant's median over arjit's, same malloc (> 1: arjit is faster); "
      "-: the model has no such variant")
if len(modes) > 1:
    for m in models:
        mine = [r for r in rows if r[0] == m]
        a = min(mine, key=lambda r: r[2]["ms_median"])
        p = min(mine, key=lambda r: r[3]["ms_median"])
        print(f"best of each, {m}: arjit {a[2]['ms_median']:.2f} ms ({a[1]} malloc), PyTorch "
              f"{p[3]['ms_median']:.2f} ms ({p[3]['best']}, {p[1]} malloc): "
              f"{p[3]['ms_median'] / a[2]['ms_median']:.2f}x")
# the same model on both sides: as many trained parameters (arjit bench's
# memory of params, 4 bytes each); for the sequence models, the first loss
for m in models:
    _, _, _, p, a = next(r for r in rows if r[0] == m)
    per = p["variants"]
    if not all("params" in r for r in per.values()):
        continue
    n_arjit = a["memory"]["params"] // 4
    parts, same = [], True
    for v, r in per.items():
        same &= r["params"] == n_arjit
        parts.append(f"{v} {r['params']}" + (f" (+{r['frozen']} held at 0)" if r.get("frozen") else ""))
    line = f"parameters, {m}: arjit {n_arjit}, PyTorch " + ", ".join(parts) + (": same" if same else ": DIFFER")
    if "loss0" in next(iter(per.values())):
        V = int(dict(kv.split("=") for kv in p["dims"].split(","))["V"])
        line += ("; first loss (mean NLL of a window) PyTorch "
                 + ", ".join(f"{v} {r['loss0']:.1f}" for v, r in per.items())
                 + f", T ln V = {p['T'] * math.log(V):.1f}")
    print(line)
EOF

if [[ -n $jsonout ]]; then
    cp "$tmp/all.json" "$jsonout" || die "cannot write $jsonout"
fi
