#!/usr/bin/env bash
# The linear Gaussian AR's maximum-likelihood fit in closed form, against
# the one arjit trains: per column, least squares on the columns before it
# (with a bias), sigma_i^2 the mean squared residual, fitted on arjit's own
# train split of the same CSV spec and scored on each split (NLL in nats per
# standardized row, as `arjit eval` reports).
#
#   bench/linear_ar_closed_form.sh [build/arjit] [CKPT]
#
# With CKPT (from `arjit train models/linear_gaussian_ar.graph --save CKPT`)
# it also prints arjit's test NLL of that checkpoint. Needs /usr/bin/python3
# with numpy. The splits come out of arjit itself: a copy of the model whose
# fn sample returns the examples it is given (arjit sample --split S).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARJIT=${1:-$ROOT/build/arjit}
CKPT=${2:-}
MODEL=$ROOT/models/linear_gaussian_ar.graph
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{ sed '/^# Ancestral/,/^end$/d' "$MODEL"; printf 'fn sample(x : f32[B, D]) -> y\n  y = x * 1\nend\n'; } >"$tmp/id.graph"
"$ARJIT" train "$tmp/id.graph" --max-steps 1 --save "$tmp/id.ck" >/dev/null 2>&1
for s in train valid test; do
    # asked for too many, sample names the split's size
    n=$({ "$ARJIT" sample "$tmp/id.graph" --ckpt "$tmp/id.ck" --split $s -n 1000000 2>&1 || true; } | grep -o 'has [0-9]* examples' | cut -d' ' -f2)
    "$ARJIT" sample "$tmp/id.graph" --ckpt "$tmp/id.ck" --split $s -n "$n" --out "$tmp/$s.txt" >/dev/null
done
/usr/bin/python3 - "$tmp" <<'PY'
import math, sys
import numpy as np
d = sys.argv[1]
x = {s: np.loadtxt(f'{d}/{s}.txt', ndmin=2) for s in ('train', 'valid', 'test')}
n, D = x['train'].shape
fit = []
for i in range(D):   # x_i on [1, x_<i]
    A = np.hstack([np.ones((n, 1)), x['train'][:, :i]])
    c = np.linalg.lstsq(A, x['train'][:, i], rcond=None)[0]
    fit.append((c, 0.5 * math.log(((x['train'][:, i] - A @ c) ** 2).mean())))
def nll(v):
    tot = np.zeros(len(v))
    for i, (c, ls) in enumerate(fit):
        mu = np.hstack([np.ones((len(v), 1)), v[:, :i]]) @ c
        tot += 0.5 * math.log(2 * math.pi) + ls + 0.5 * ((v[:, i] - mu) / math.exp(ls)) ** 2
    return tot.mean()
print('closed form: ' + '  '.join(f'{s} NLL {nll(v):.4f}' for s, v in x.items()))
PY
[[ -z $CKPT ]] || "$ARJIT" eval "$MODEL" --ckpt "$CKPT"
