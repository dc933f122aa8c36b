#!/usr/bin/env bash
# Sampling models/gpt.graph: arjit's derived sampler (KV caches, one
# position per token, fused engine) against eager PyTorch with a KV cache
# (bench/pytorch/gpt_sample.py): 63 tokens at batch 1 on 1 thread, the
# two run in alternation, ROUNDS times each (default 5), then the medians.
#
#   bench/sample_gpt.sh [ROUNDS] [BUILD_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}
BUILD=${2:-$ROOT/build}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS] [BUILD_DIR]" >&2; exit 2; }
[[ -x $BUILD/arjit ]] || { echo "$0: no $BUILD/arjit: build arjit first" >&2; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "$0: /usr/bin/python3 cannot import torch" >&2; exit 1; }
export OMP_NUM_THREADS=1
arjit=() torch=() full=()
for ((r = 0; r < ROUNDS; r++)); do
    out=$("$BUILD/arjit" bench "$ROOT/models/gpt.graph" --sample --threads 1 --steps 1 --length 63)
    arjit+=("$(awk '$1 == "incremental" && $2 == "fused" { print $3 }' <<<"$out")")
    full+=("$(awk '$1 == "full" && $2 == "fused" { print $3 }' <<<"$out")")
    torch+=("$(/usr/bin/python3 "$ROOT/bench/pytorch/gpt_sample.py" --rounds 1 --threads 1 --length 63 | awk '{ print $2 }')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a=$(median "${arjit[@]}") t=$(median "${torch[@]}") f=$(median "${full[@]}")
echo "GPT sampling, 63 tokens, batch 1, 1 thread, median of $ROUNDS alternated rounds (ms per sample):"
echo "  arjit incremental (fused) $a"
echo "  arjit full form (fused)   $f"
echo "  pytorch with a KV cache   $t"
awk -v a="$a" -v t="$t" -v f="$f" 'BEGIN { printf "  arjit %.1fx PyTorch'"'"'s rate; incremental %.1fx the full form\n", t / a, f / a }'
