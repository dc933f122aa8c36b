#!/usr/bin/env bash
# Train a text model from its recipe for a wall-clock budget, then score it:
# issue 12's "validation nats per character within 10 minutes of training
# on 2 cores" (models/lstm.graph, models/gpt.graph on Tiny Shakespeare).
#
#   bench/text_budget.sh MODEL [--seconds 600] [--threads 2] [--batch B] [TRAIN FLAGS...]
#
# The budget becomes a step count: the training loop's step is timed first
# (two short runs, the recipe's batch), and --max-steps is what fits in 90%
# of the budget (the rest: the JIT compile and the validations). The recipe's
# cosine schedule then runs over exactly those steps. Prints the run's wall
# time (compile and validation included), its steps and the held-out
# split's nats and bits per character. Extra flags go to `arjit train` (after the
# recipe's: --lr 3e-3 overrides it). Exit: 0 done, 1 a failure, 2 bad flags.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ME=bench/text_budget.sh
ARJIT=${ARJIT:-$ROOT/build/arjit}
bad() { echo "$ME: $*; usage: $ME MODEL [--seconds S] [--threads N] [--batch B] [TRAIN FLAGS...]" >&2; exit 2; }
die() { echo "$ME: error: $*" >&2; exit 1; }

(($#)) || bad "no model given"
model=$1; shift
[[ -f $model ]] || model=$ROOT/models/$model.graph
[[ -f $model ]] || bad "no model file '$1' (nor models/$1.graph)"
seconds=600 threads=2 batch=
extra=()
posint() { [[ $2 =~ ^[1-9][0-9]{0,6}$ ]] || bad "$1 wants a positive integer, got '$2'"; }
while (($#)); do
    case $1 in
        --seconds) (($# >= 2)) || bad "--seconds needs a value"; posint "$1" "$2"; seconds=$2; shift 2 ;;
        --threads) (($# >= 2)) || bad "--threads needs a value"; posint "$1" "$2"; threads=$2; shift 2 ;;
        --batch)   (($# >= 2)) || bad "--batch needs a value"; posint "$1" "$2"; batch=$2; shift 2 ;;
        *)         extra+=("$1"); shift ;;
    esac
done
[[ -x $ARJIT ]] || die "no arjit at $ARJIT (build it: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build)"
if [[ -z $batch ]]; then   # the recipe's batch
    batch=$(sed -n '/^recipe/,/^end/s/^ *batch *= *\([0-9]*\).*/\1/p' "$model")
    [[ -n $batch ]] || die "$model has no recipe batch: give --batch"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. the step time of the training loop itself (data, step, progress): two
# short runs, 40 and 240 steps; their difference over 200 steps leaves out
# the compile and the validation both pay
short() {
    local t0 t1
    t0=$(date +%s.%N)
    "$ARJIT" train "$model" --data shakespeare --batch "$batch" --threads "$threads" --max-steps "$1" \
        --valid-examples 16 "${extra[@]}" >/dev/null 2>&1 || die "arjit train $model --max-steps $1 failed"
    t1=$(date +%s.%N)
    python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1"
}
a=$(short 40)
b=$(short 240)
ms=$(python3 -c 'import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000 / 200, 2))' "$a" "$b")
steps=$(python3 -c 'import sys; print(max(1, int(0.9 * float(sys.argv[1]) * 1000 / float(sys.argv[2]))))' "$seconds" "$ms")
echo "$ME: $(basename "$model"): $ms ms per training step at batch $batch, $threads threads: $steps steps in 90% of ${seconds}s"

# 2. the run: the recipe, as many epochs as the steps need, cosine over the steps
t0=$(date +%s.%N)
"$ARJIT" train "$model" --data shakespeare --batch "$batch" --threads "$threads" --epochs 100000 \
    --max-steps "$steps" --patience 100000 --valid-examples 512 --save "$tmp/run.ckpt" "${extra[@]}" \
    || die "arjit train $model failed"
t1=$(date +%s.%N)

# 3. the best checkpoint (by the first validation windows), scored on the
# whole held-out 10% (for text:FILE the valid split and the test split are
# the same bytes, docs/datasets.md)
out=$("$ARJIT" eval "$model" --ckpt "$tmp/run.ckpt" --threads "$threads") || die "arjit eval failed"
echo "$out"
python3 - "$(basename "$model")" "$t0" "$t1" "$steps" "$seconds" "$out" <<'EOF'
import re, sys
m, t0, t1, steps, budget, out = sys.argv[1:]
wall = float(t1) - float(t0)
nats = re.search(r"NLL ([0-9.]+) nats/char", out)
print(f"{m}: {steps} steps in {wall:.0f} s of wall time (budget {budget} s): held-out (valid = test) "
      f"{nats.group(1) if nats else '?'} nats per character")
EOF
