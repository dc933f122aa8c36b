#!/usr/bin/env bash
# `arjit train | eval | sample | gradcheck` from the command line: help, usage
# errors (exit 2 with a hint), errors naming the file (exit 1), a short run
# on synthetic data end to end, and Ctrl-C (exit 130, CKPT.last kept).
#
#   tests/test_cli_train.sh path/to/arjit     (ctest runs it as `cli_train`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"
# FVSBN without its recipe: the tests below give train's flags themselves
# (the recipe's own tests are at the end)
FVSBN=$TMP/fvsbn.graph
sed '/^recipe$/,/^end$/d' "$SRC/models/fvsbn.graph" >"$FVSBN"

# usage CODE-2 ARGS... TEXT: a usage error that says TEXT and hints at help.
usage() {
    local text=${*: -1}
    run 2 "${@:1:$#-1}" && has "$ERR" "$text" && has "$ERR" "see 'arjit $1 --help'"
}

# Synthetic 2x3 images in IDX format (the `mnist` spec reads any size):
# x0 random, x1 = x0, x2 = 1 - x0, x3 random, x4 = x3, x5 = 1.
idx() {   # idx FILE COUNT
    local n=$2 bytes=""
    bytes+=$(printf '\\x00\\x00\\x08\\x03\\x00\\x00\\x%02x\\x%02x\\x00\\x00\\x00\\x02\\x00\\x00\\x00\\x03' $((n >> 8)) $((n & 255)))
    for ((i = 0; i < n; i++)); do
        local a=$((RANDOM % 10 < 8 ? 255 : 0)) b=$((RANDOM % 2 * 255))
        bytes+=$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x%02x\\xff' $a $a $((255 - a)) $b $b)
    done
    printf "$bytes" >"$1"
}
mkdir -p "$TMP/data"
RANDOM=42
idx "$TMP/data/train-images-idx3-ubyte" 600
idx "$TMP/data/t10k-images-idx3-ubyte" 100
export ARJIT_DATA=$TMP/data

# ---------------------------------------------------------------- help
run 0 --help && for c in train eval sample gradcheck; do has "$OUT" "  $c "; done
run 0 train --help && has "$OUT" "usage: arjit train FILE [FLAGS]" && has "$OUT" "--resume CKPT" &&
    has "$OUT" "CKPT.last" && has "$OUT" "exits 130"
run 0 eval --help && has "$OUT" "bits per dimension"
run 0 sample --help && has "$OUT" "-n N"
run 0 gradcheck --help && has "$OUT" "--tol X"

# ---------------------------------------------------------------- usage errors
usage train "$FVSBN" "'train' needs --data SPEC"
usage train "$FVSBN" --data mnist --lr abc "bad value 'abc' for --lr: expected a number > 0"
usage train "$FVSBN" --data mnist --lr 0 "bad value '0' for --lr"
usage train "$FVSBN" --data mnist --epochs -1 "bad value '-1' for --epochs"
usage train "$FVSBN" --data mnist --epochs 2x "bad value '2x' for --epochs"
usage train "$FVSBN" --data mnist --batch 0 "bad value '0' for --batch"
usage train "$FVSBN" --data mnist --opt adamw "expected adam, sgd or rmsprop"
usage train "$FVSBN" --data mnist --schedule linear "expected constant, step or cosine"
usage train "$FVSBN" --data mnist --beta2 1 "expected a number in [0, 1)"
usage train "$FVSBN" --data mnist --clip nan "bad value 'nan' for --clip"
usage train "$FVSBN" --data mnist --engine jet "unknown engine 'jet'"
usage train "$FVSBN" --data mnist --ckpt x "unknown flag '--ckpt' for 'train'"
usage train "$FVSBN" --data "flag '--data' of 'train' needs a value"
usage eval "$FVSBN" "'eval' needs --ckpt CKPT"
usage eval "$FVSBN" --ckpt x --split dev "expected test, valid or train"
usage sample "$FVSBN" --ckpt x -n 0 "bad value '0' for -n"
usage sample "$FVSBN" --ckpt x --threads 0 "bad value '0' for --threads"
usage eval "$FVSBN" --ckpt x --threads 0 "bad value '0' for --threads"
usage train "$FVSBN" --data mnist --valid-examples 0 "bad value '0' for --valid-examples"
usage train "$FVSBN" --data mnist --dims D=6,D=6 "--dims: D is given twice"
usage gradcheck "$FVSBN" --probes many "bad value 'many' for --probes"
usage gradcheck "$FVSBN" --tol -1 "bad value '-1' for --tol"

# ---------------------------------------------------------------- errors naming the file
run 1 train "$TMP/none.graph" --data mnist && has "$ERR" "$TMP/none.graph"
run 1 train "$FVSBN" --data csv:nothere.csv --dims D=6 && has "$ERR" "cannot find nothere.csv"
run 1 train "$FVSBN" --data mnist && has "$ERR" "has 6 values per example" && has "$ERR" "f32[100, 784]"
run 1 train "$FVSBN" --data mnist --dims D=6,Q=1 && has "$ERR" "the model has no dim 'Q'"
run 1 eval "$FVSBN" --ckpt "$TMP/none.ck" && has "$ERR" "$TMP/none.ck"
printf 'ARJITCK1 but not really' >"$TMP/junk.ck"
run 1 eval "$FVSBN" --ckpt "$TMP/junk.ck" && has "$ERR" "$TMP/junk.ck: error:"
run 1 train "$FVSBN" --resume "$TMP/junk.ck" && has "$ERR" "$TMP/junk.ck: error:"

# ---------------------------------------------------------------- gradcheck
run 0 gradcheck "$FVSBN" --dims D=8 && has "$OUT" "(D=8,B=2)" && has "$OUT" "PASS" && has "$OUT" "all 2 parameters pass"
run 0 gradcheck "$SRC/models/nade.graph" --dims D=6,H=4,B=3 --probes 5 && has "$OUT" "(D=6,H=4,B=3)"
run 1 gradcheck "$FVSBN" --dims D=8 --tol 1e-12 && has "$OUT" "FAIL" && has "$OUT" "2 of 2 parameters FAIL"
run 1 gradcheck "$FVSBN" --dims D=8 --fn nope && has "$ERR" "fvsbn.graph: error: the model has no fn 'nope'"
# at its real size (D=784, a loss near 4000): double precision keeps the error far under the tolerance
run 0 gradcheck "$FVSBN" && has "$OUT" "(D=784,B=2), eps 0.001, tol 0.001" && has "$OUT" "all 2 parameters pass"
run 1 gradcheck "$FVSBN" --dims D=8 --fn sample &&
    has "$ERR" "fvsbn.graph:34:10: error: fn sample draws random numbers (bernoulli)"
# a legal [D, D] parameter too large to allocate (calloc must return NULL under ASan too)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1 run 1 gradcheck "$FVSBN" --dims D=1000000 &&
    has "$ERR" "fvsbn.graph:15:7: error: cannot allocate 8000000000000 bytes for parameter W : f32[1000000, 1000000]"

# ---------------------------------------------------------------- train, eval, sample
CK=$TMP/fv.ck
run 0 train "$FVSBN" --dims D=6 --data mnist --epochs 2 --batch 10 --lr 0.05 --save "$CK" &&
    has "$OUT" "epoch 1: train NLL" && has "$OUT" "epoch 2: train NLL" && has "$OUT" "done: 100 steps, 2 epochs" &&
    has "$ERR" "epoch 1/2: step 1/50" && [[ -f $CK && -f $CK.last ]] || fail "train did not write $CK and $CK.last"
run 0 eval "$FVSBN" --ckpt "$CK" && has "$OUT" "test NLL " && has "$OUT" "bits/dim (100 examples of 6 values, mnist)"
run 0 eval "$FVSBN" --ckpt "$CK" --split valid --batch 7 && has "$OUT" "valid NLL "
run 0 sample "$FVSBN" --ckpt "$CK" -n 9 --out "$TMP/s.png" && has "$OUT" "wrote 9 samples of 2x3 to $TMP/s.png" &&
    [[ -s $TMP/s.png ]] || fail "no PNG"
# a sampler that conditions on data gets the first N examples of a split
sed '/^fn sample/,$d' "$FVSBN" >"$TMP/fvcond.graph"
printf 'fn sample(x : f32[B, D]) -> y\n  y = x * 1\nend\n' >>"$TMP/fvcond.graph"
run 0 train "$TMP/fvcond.graph" --dims D=6 --data mnist --epochs 1 --batch 10 --save "$TMP/fvcond.ck" &&
    run 0 sample "$TMP/fvcond.graph" --ckpt "$TMP/fvcond.ck" -n 3 --out "$TMP/c_test.txt" &&
    run 0 sample "$TMP/fvcond.graph" --ckpt "$TMP/fvcond.ck" -n 3 --split valid --out "$TMP/c_valid.txt" &&
    [[ $(wc -l <"$TMP/c_test.txt") == 3 ]] && ! cmp -s "$TMP/c_test.txt" "$TMP/c_valid.txt" ||
    fail "sample with a conditioning input: not 3 examples, or the same for test and valid"
run 1 sample "$TMP/fvcond.graph" --ckpt "$TMP/fvcond.ck" -n 100000 && has "$ERR" "fewer than the 100000 samples asked for"
# the sampler derived from fn loglik (docs/sampling.md): NADE's without its fn
# sample is incremental, FVSBN's the full form either way, so the same draws
sed '/^fn sample/,$d' "$SRC/models/nade.graph" >"$TMP/naded.graph"
sed '/^fn sample/,$d' "$FVSBN" >"$TMP/fvd.graph"
run 0 train "$TMP/naded.graph" --dims D=6,H=4 --data mnist --epochs 1 --batch 10 --save "$TMP/naded.ck" &&
    run 0 sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" -n 4 --out "$TMP/d1.txt" --seed 3 &&
    [[ $(wc -l <"$TMP/d1.txt") == 4 ]] && [[ $(head -1 "$TMP/d1.txt" | wc -w) == 6 ]] ||
    fail "derived sampler: not 4 samples of 6 values"
run 0 sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" -n 4 --out "$TMP/g1.txt" --top-k 1 --seed 1 &&
    run 0 sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" -n 4 --out "$TMP/g2.txt" --top-k 1 --seed 2 &&
    cmp -s "$TMP/g1.txt" "$TMP/g2.txt" || fail "--top-k 1 is not greedy: another seed drew otherwise"
run 0 sample "$TMP/fvd.graph" --ckpt "$CK" -n 3 --out "$TMP/f1.txt" --temperature 0.5 &&
    run 0 sample "$TMP/fvd.graph" --ckpt "$CK" -n 3 --out "$TMP/f2.txt" --temperature 0.5 --naive-sampling --engine naive &&
    cmp -s "$TMP/f1.txt" "$TMP/f2.txt" || fail "--naive-sampling drew otherwise"
usage sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" --temperature 0 "bad value '0' for --temperature"
usage sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" --top-k 0 "bad value '0' for --top-k"
usage sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" --length x "bad value 'x' for --length"
run 1 sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" --naive-sampling && has "$ERR" "has no full-form sampler"
run 1 sample "$TMP/naded.graph" --ckpt "$TMP/naded.ck" --prompt ab && has "$ERR" "records no vocabulary"
run 1 sample "$FVSBN" --ckpt "$CK" --top-k 1 && has "$ERR" "the model has its own fn sample"
# resuming a finished run has nothing to do; one more epoch continues it
run 0 train "$FVSBN" --resume "$CK.last" --epochs 2 && has "$ERR" "nothing to do"
run 0 train "$FVSBN" --resume "$CK.last" --epochs 3 --lr 0.05 && has "$OUT" "epoch 3: train NLL" &&
    has "$OUT" "done: 150 steps, 3 epochs"
run 1 train "$SRC/models/nade.graph" --resume "$CK.last" && has "$ERR" "trained on another model"
run 0 sample "$FVSBN" --ckpt "$CK" -n 3 --threads 2 --out "$TMP/s.txt" && [[ $(wc -l <"$TMP/s.txt") == 3 ]] ||
    fail "sample --out s.txt: not 3 lines of text"

# --out and --save are written as a new file renamed over the old: a target
# that is no regular file (a device, a FIFO) would be replaced, so it is refused
mkfifo "$TMP/fifo"
usage sample "$FVSBN" --ckpt "$CK" -n 3 --out "$TMP/fifo" "--out: $TMP/fifo: it is a FIFO"
usage train "$FVSBN" --dims D=6 --data mnist --epochs 1 --batch 10 --save "$TMP/fifo" "--save: $TMP/fifo: it is a FIFO"
mkdir "$TMP/dir.last"
usage train "$FVSBN" --dims D=6 --data mnist --epochs 1 --batch 10 --save "$TMP/dir" "--save: $TMP/dir.last: it is a directory"
[[ -p $TMP/fifo ]] || fail "the FIFO was replaced"

# a PNG only of samples that are images: data that were not (a table) give text,
# and --out *.png is an error naming why, with nothing written
{
    echo "a;b;c;d;e;f"
    for ((i = 0; i < 100; i++)); do echo "$((i % 2));$((i % 3 > 0));1;0;$((i % 5 > 1));$((i % 7 > 3))"; done
} >"$TMP/t.csv"
run 0 train "$FVSBN" --dims D=6 --data "csv:$TMP/t.csv" --epochs 1 --batch 10 --save "$TMP/csv.ck"
run 1 sample "$FVSBN" --ckpt "$TMP/csv.ck" -n 3 --out "$TMP/t.png" && has "$ERR" "cannot draw the samples as an image" &&
    has "$ERR" "records no image size" && { [[ ! -e $TMP/t.png ]] || fail "sample wrote $TMP/t.png"; }
run 0 sample "$FVSBN" --ckpt "$TMP/csv.ck" -n 3 && [[ $(wc -l <"$OUT") == 3 ]] || fail "sample: not 3 lines on stdout"

# eval --fn scores another fn of log p(x); an NLL that is NaN is an error
{
    cat "$FVSBN"
    printf 'fn twice(x : f32[B, D]) -> t\n'
    sed -n '/^fn loglik/,/^end/p' "$FVSBN" | sed '1d;$d'
    printf '  t = add(ll, ll)\nend\nfn bad(x : f32[B, D]) -> l\n  s = sum(x, axis=1)\n  e = exp(s)\n'
    printf '  n = neg(e)\n  l = log(n)\nend\n'
} >"$TMP/fv2.graph"
run 0 eval "$FVSBN" --ckpt "$CK" && nll=$(grep -o 'test NLL [0-9.]*' "$OUT" | cut -d' ' -f3)
run 0 eval "$TMP/fv2.graph" --ckpt "$CK" --fn twice && has "$OUT" "fn twice)" &&
    nll2=$(grep -o 'test NLL [0-9.]*' "$OUT" | cut -d' ' -f3) &&
    { awk -v a="$nll" -v b="$nll2" 'BEGIN { d = b - 2 * a; exit !(a > 0 && d < 2e-3 && d > -2e-3) }' ||
        fail "eval --fn twice: NLL $nll2, not twice $nll"; }
run 1 eval "$TMP/fv2.graph" --ckpt "$CK" --fn bad && has "$ERR" "the NLL of the test split of 'mnist' is nan" &&
    has "$ERR" "--check-nan" && has "$ERR" "fv2.graph:"
run 1 eval "$TMP/fv2.graph" --ckpt "$CK" --fn nope && has "$ERR" "the model has no fn nope"

# --valid-examples: validation scores the first N examples of the split only
run 0 train "$FVSBN" --dims D=6 --data mnist --epochs 1 --batch 10 --lr 0.05 && a=$(grep -o 'valid NLL [0-9.]*' "$OUT")
run 0 train "$FVSBN" --dims D=6 --data mnist --epochs 1 --batch 10 --lr 0.05 --valid-examples 1000 &&
    { [[ -n $a && $(grep -o 'valid NLL [0-9.]*' "$OUT") == "$a" ]] || fail "--valid-examples 1000 (all 100) changed $a"; }
run 0 train "$FVSBN" --dims D=6 --data mnist --epochs 1 --batch 10 --lr 0.05 --valid-examples 7 &&
    b=$(grep -o 'valid NLL [0-9.]*' "$OUT") &&
    { [[ -n $a && -n $b && $a != "$b" ]] || fail "--valid-examples 7: the same valid NLL as the whole split ($a)"; }

# a dim of 0 trains on every engine to the same numbers: z : [B, K] with K = 0
# makes matmul(z, U, tb=1) an empty sum, zeros (the model is then its biases)
cat >"$TMP/zk.graph" <<'EOF'
dim D = 6
dim K = 2
dim B
param U : f32[D, K] = normal(0.1)
param b : f32[D] = zeros
fn loglik(x : f32[B, D]) -> ll
  z = constant(value=1, shape=[B, K])
  a = matmul(z, U, tb=1)
  logit = add(a, b)
  nll = bernoulli_nll(logit, x)
  s = sum(nll, axis=1)
  ll = neg(s)
end
EOF
for e in interp naive fused; do
    run 0 train "$TMP/zk.graph" --dims K=0 --data mnist --epochs 1 --batch 10 --lr 0.05 --engine $e &&
        grep -o 'valid NLL [0-9.]*' "$OUT" >"$TMP/zk.$e"
done
cmp -s "$TMP/zk.interp" "$TMP/zk.naive" && cmp -s "$TMP/zk.interp" "$TMP/zk.fused" && [[ -s $TMP/zk.interp ]] ||
    fail "K=0: engines trained to different NLLs: $(cat "$TMP"/zk.*)"

# every engine trains the same model to the same numbers (f32 rounding aside)
for e in interp naive fused; do
    run 0 train "$FVSBN" --dims D=6 --data mnist --epochs 2 --batch 10 --lr 0.05 --engine $e --threads 2 &&
        grep -o 'epoch 2: train NLL [0-9.]*' "$OUT" | cut -c1-24 >"$TMP/nll.$e"
done
cmp -s "$TMP/nll.interp" "$TMP/nll.naive" && cmp -s "$TMP/nll.interp" "$TMP/nll.fused" && [[ -s $TMP/nll.interp ]] ||
    fail "engines trained to different NLLs: $(cat "$TMP"/nll.*)"
run 0 eval "$FVSBN" --ckpt "$CK" --engine fused && has "$OUT" "test NLL "
run 0 sample "$FVSBN" --ckpt "$CK" -n 9 --out "$TMP/s2.png" --engine fused && [[ -s $TMP/s2.png ]] || fail "no PNG from fused"

# --check-nan: a model whose log-likelihood is log of a negative number.
# The compiled engines stop at the kernel that writes the NaN, naming it and
# its graph line; the interpreter says it does not check, and training
# then fails on the NaN loss.
cat >"$TMP/nan.graph" <<'EOF'
dim D = 6
dim B
param b : f32[D] = zeros
fn loglik(x : f32[B, D]) -> ll
  y = add(x, b)
  e = exp(y)
  n = neg(e)
  l = log(n)
  ll = sum(l, axis=1)
end
EOF
# both name the op's own line: naive's kernel is the op, fused checks each
# value it computes inside a kernel (the kernel's line range is named too)
for e in naive fused; do
    run 1 train "$TMP/nan.graph" --data mnist --batch 10 --engine $e --check-nan &&
        has "$ERR" "nan check: kernel k" && has "$ERR" "nan.graph:8:" && has "$ERR" "l = log" || continue
    if [ $e = naive ]; then has "$ERR" "wrote NaN"; else has "$ERR" "log made NaN"; fi
done
# a NaN logit fed to bernoulli: naive stores the logit and names its line;
# fused computes it inside the sampling kernel and names the same line
sed 's/^    xi = bernoulli(sum(xs \* wi, axis=1) + bi) .*$/    bad = log(-exp(sum(xs * wi, axis=1) + bi))\n    xi = bernoulli(bad)/' \
    "$FVSBN" >"$TMP/fvnan.graph"
line=$(grep -n 'bernoulli(bad)' "$TMP/fvnan.graph" | cut -d: -f1)
[ -n "$line" ] || fail "the NaN logit was not written into FVSBN's sampler (models/fvsbn.graph changed?)"
for e in naive fused; do
    run 1 sample "$TMP/fvnan.graph" --ckpt "$CK" -n 3 --out "$TMP/nan.txt" --engine $e --check-nan &&
        has "$ERR" "nan check: kernel k" && has "$ERR" "fvnan.graph:$((line - 1)):" && has "$ERR" "bad = log"
done
run 1 train "$TMP/nan.graph" --data mnist --batch 10 --check-nan --engine interp && has "$ERR" "the interpreter runs unchecked" &&
    has "$ERR" "training diverged"
run 1 eval "$FVSBN" --ckpt "$TMP/none.ck" --engine fused --check-nan && has "$ERR" "$TMP/none.ck"
run 1 bench "$TMP/nan.graph" --batch 4 --steps 1 --engine naive --check-nan && has "$ERR" "nan check: kernel k"
run 1 bench "$TMP/nan.graph" --batch 4 --steps 1 --engine interp --check-nan &&
    has "$ERR" "nan check: the interpreter's result loss"
run 0 train --help && has "$OUT" "--check-nan"
run 0 sample --help && has "$OUT" "--check-nan"

# Ctrl-C: the step finishes, CKPT.last is saved, exit 130; then it resumes.
"$ARJIT" train "$FVSBN" --dims D=6 --data mnist --epochs 100000 --batch 10 --save "$TMP/int.ck" >"$OUT" 2>"$ERR" &
pid=$!
for ((i = 0; i < 200; i++)); do grep -q "step" "$ERR" && break; sleep 0.05; done
kill -INT $pid
wait $pid
got=$?
if ((got != 130)); then
    fail "Ctrl-C: exit $got, expected 130"
else
    LAST="train (Ctrl-C)"
    has "$ERR" "interrupted: finishing this step" && has "$ERR" "continue with --resume $TMP/int.ck.last" &&
        passes=$((passes + 1))
    run 0 train "$FVSBN" --resume "$TMP/int.ck.last" --max-steps 60 --lr 0.01 && has "$ERR" "resuming" && has "$ERR" "trained with adam lr=0.001"
fi

# ---------------------------------------------------------------- recipes
# A model's recipe is train's defaults: no flag trains it as written there,
# a flag overrides its setting, check prints it, a bad value names its line.
{
    sed '/^fn sample/,$d' "$FVSBN"
    printf 'recipe\n  data = "mnist"\n  epochs = 2\n  batch = 10\n  opt = sgd\n  lr = 0.05\n  seed = 7\nend\n'
} >"$TMP/rec.graph"
run 0 check "$TMP/rec.graph" --dims D=6 &&
    has "$OUT" "recipe (train's defaults): --data mnist --epochs 2 --batch 10 --opt sgd --lr 0.05 --seed 7"
run 0 train "$TMP/rec.graph" --dims D=6 --save "$TMP/rec.ck" && has "$OUT" "done: 100 steps, 2 epochs" &&
    grep -o 'epoch 2: train NLL [0-9.]*' "$OUT" >"$TMP/rec.recipe"
run 0 train "$TMP/rec.graph" --dims D=6 --data mnist --epochs 2 --batch 10 --opt sgd --lr 0.05 --seed 7 &&
    grep -o 'epoch 2: train NLL [0-9.]*' "$OUT" >"$TMP/rec.flags"
[[ -s $TMP/rec.recipe ]] && cmp -s "$TMP/rec.recipe" "$TMP/rec.flags" ||
    fail "the recipe's run differs from the same flags': $(cat "$TMP"/rec.*)"
run 0 train "$TMP/rec.graph" --dims D=6 --epochs 1 --batch 20 && has "$OUT" "done: 25 steps, 1 epochs"
run 0 train "$TMP/rec.graph" --resume "$TMP/rec.ck.last" --epochs 3 && has "$OUT" "done: 150 steps, 3 epochs"
sed 's/^  lr = 0.05$/  lr = 0/' "$TMP/rec.graph" >"$TMP/rec0.graph"
line=$(grep -n '^  lr = 0$' "$TMP/rec0.graph" | cut -d: -f1)
run 1 check "$TMP/rec0.graph" && has "$ERR" "rec0.graph:$line:8: error: recipe: bad value '0' for lr: expected a number > 0"
run 1 train "$TMP/rec0.graph" --dims D=6 && has "$ERR" "rec0.graph:$line:8: error: recipe: bad value '0' for lr"
run 0 train "$TMP/rec0.graph" --dims D=6 --lr 0.05 --max-steps 2 && has "$OUT" "done: 2 steps"
sed 's/^  opt = sgd$/  opt = adagrad/' "$TMP/rec.graph" >"$TMP/recw.graph"
run 1 train "$TMP/recw.graph" --dims D=6 && has "$ERR" "recipe: bad value 'adagrad' for opt: expected adam, sgd or rmsprop"
run 0 dump "$TMP/rec.graph" && has "$OUT" $'recipe\n' && has "$OUT" '  data = "mnist"' && has "$OUT" "  lr = 0.05"
# every setting the parser knows is a flag of train (here all at once, valid)
printf 'recipe\n  data = "mnist"\n  epochs = 1\n  batch = 10\n  opt = rmsprop\n  lr = 1e-3\n  momentum = 0.5\n  beta1 = 0.8\n  beta2 = 0.99\n  rho = 0.95\n  eps = 1e-7\n  weight_decay = 0\n  clip = 5\n  schedule = step\n  step_epochs = 2\n  gamma = 0.5\n  seed = 3\n  max_steps = 4\n  patience = 2\n  valid_examples = 50\nend\n' >"$TMP/all.rec"
{ sed '/^fn sample/,$d' "$FVSBN"; cat "$TMP/all.rec"; } >"$TMP/recall.graph"
run 0 train "$TMP/recall.graph" --dims D=6 && has "$OUT" "done: 4 steps"
# the models' recipes: FVSBN's is the documented one that reaches 97.9
run 0 check "$SRC/models/fvsbn.graph" &&
    has "$OUT" "--data mnist-bin --epochs 40 --batch 100 --opt sgd --momentum 0.9 --lr 0.05 --weight-decay 1e-4 --schedule cosine"

# ---------------------------------------------------------------- graphs
# GraphRNN on its recipe's grids (small dims): samples are edge lists, and
# graphstats compares them with the family
G=$SRC/models/graphrnn.graph
run 0 train "$G" --dims H=4,F=4 --max-steps 2 --batch 8 --valid-examples 8 --save "$TMP/g.ck" && has "$OUT" "done: 2 steps"
run 0 sample "$G" --ckpt "$TMP/g.ck" -n 3 && has "$OUT" "graph 0: " && has "$OUT" "graph 2: " &&
    { awk '/^graph/ { next } NF != 2 || $1 >= $2 { bad = 1 } END { exit bad }' "$OUT" || fail "sample: not edge lines 'u v', u < v"; }
run 0 graphstats "$G" --ckpt "$TMP/g.ck" -n 5 && has "$OUT" "samples of graphs:grid against its test split" &&
    has "$OUT" "    5 graphs" && has "$OUT" "  100 graphs" && grep -qE '^  degree +[0-9.]+ +[0-9.]+$' "$OUT" &&
    grep -qE '^  clustering +[0-9.]+ +[0-9.]+$' "$OUT" || fail "graphstats: no degree and clustering MMDs"
run 1 graphstats "$FVSBN" --ckpt "$CK" && has "$ERR" "was trained on 'mnist', not a graphs: family"
run 1 train "$G" --data graphs:tree && has "$ERR" "unknown graph family 'graphs:tree'"
run 1 train "$G" --data graphs:ladder && has "$ERR" "has 175 values per example"

echo "cli_train: $passes passed, $fails failed"
((fails == 0))
