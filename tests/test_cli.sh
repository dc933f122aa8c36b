#!/usr/bin/env bash
# The `arjit` command line: exit codes (0 ok, 1 bad model, 2 bad usage),
# help, hints, diagnostics, stdin, and `check` on every model in models/.
#
#   tests/test_cli.sh path/to/arjit      (ctest runs it as the test `cli`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"

# A small model that uses a recurrence, so op counts must look inside bodies.
cat >"$TMP/tiny.graph" <<'EOF'
# tiny: an RNN-like scan, for the CLI test
dim B
dim D = 3
dim H = 4
param W: f32[D, H] = normal(0.1)
param U: f32[H, H] = normal(0.1)
param h0: f32[B, H] = zeros
fn loglik(x: f32[B, D, D]) -> hT, hs
  hT, hs = recurrence(steps=D) {
    carry h = h0
    slice xt = x, axis=1
    a = matmul(xt, W)
    b = matmul(h, U)
    c = add(a, b)
    hn = tanh(c)
    next h = hn
    stack hn, axis=1
  }
end
EOF
printf 'dim D = 3\nfn loglik(x: f32[D]) -> y\n  y = frobnicate(x)\nend\n' >"$TMP/broken.graph"

# --- help ---------------------------------------------------------------
LAST="--help"
run 0 --help && has "$OUT" "check" && has "$OUT" "dump" && has "$OUT" "bench"
run 0 -h && has "$OUT" "commands:"
run 2 && has "$ERR" "usage:"
for cmd in check bench dump; do   # dump last: --stage is checked below
    LAST="$cmd --help"
    run 0 "$cmd" --help && has "$OUT" "--dims" && has "$OUT" "usage: arjit $cmd"
done
has "$OUT" "--stage"

# --- usage errors: exit 2 and a hint ------------------------------------
LAST="frobnicate"
run 2 frobnicate && has "$ERR" "unknown command 'frobnicate'" && has "$ERR" "see 'arjit --help'"
LAST="--foo"
run 2 --foo && has "$ERR" "unknown flag '--foo'"
LAST="check --foo"
run 2 check --foo "$TMP/tiny.graph" && has "$ERR" "arjit: unknown flag '--foo' for 'check'; see 'arjit check --help'"
LAST="check --foo=1"
run 2 check --foo=1 "$TMP/tiny.graph" && has "$ERR" "unknown flag '--foo' for 'check'"
LAST="check"
run 2 check && has "$ERR" "needs a FILE" && has "$ERR" "arjit check --help"
LAST="check --dims"
run 2 check "$TMP/tiny.graph" --dims && has "$ERR" "needs a value"
# --dims's syntax is the command line's (exit 2); a name the model lacks is the model's (exit 1, below)
run 2 check "$TMP/tiny.graph" --dims D=x && has "$ERR" "--dims: bad value for D" && has "$ERR" "see 'arjit check --help'"
run 2 check "$TMP/tiny.graph" --dims D=1,D=2 && has "$ERR" "--dims: D is given twice in 'D=1,D=2'"
run 2 dump --stage fused "$TMP/tiny.graph" --dims H=4,B=2,H=5 && has "$ERR" "H is given twice" &&
    has "$ERR" "see 'arjit dump --help'"
LAST="dump a b"
run 2 dump "$TMP/tiny.graph" "$TMP/tiny.graph" && has "$ERR" "unexpected argument"
LAST="dump --stage bogus"
run 2 dump --stage bogus "$TMP/tiny.graph" && has "$ERR" "unknown stage 'bogus'"

# --- model errors: exit 1 and a diagnostic naming the place -------------
LAST="check missing"
run 1 check "$TMP/no-such-model.graph" && has "$ERR" "$TMP/no-such-model.graph"
LAST="check broken"
run 1 check "$TMP/broken.graph" && has "$ERR" "$TMP/broken.graph:3:7: error:" && has "$ERR" "frobnicate"
LAST="check --dims Q=2"
run 1 check --dims Q=2 "$TMP/tiny.graph" && has "$ERR" "Q"
LAST="check good broken"
run 1 check "$TMP/tiny.graph" "$TMP/broken.graph" && has "$OUT" "tiny.graph: ok" && has "$ERR" "broken.graph"

# --- check: the summary -------------------------------------------------
LAST="check tiny"
if run 0 check "$TMP/tiny.graph"; then
    has "$OUT" "bound at run time"
    has "$OUT" "total: unknown until B are bound"
    has "$OUT" "fn loglik(x: f32[B, 3, 3])"
    has "$OUT" "matmul: 2"       # both inside the recurrence body
    has "$OUT" "recurrence: 1"
    has "$OUT" "params: W, U, h0"
fi
LAST="check --dims B=2"
if run 0 check --dims B=2,H=5 "$TMP/tiny.graph"; then
    has "$OUT" "(from --dims)"
    has "$OUT" "total: 50 scalars"   # W 3*5 + U 5*5 + h0 2*5
fi

# --- stdin and dump -----------------------------------------------------
LAST="dump -"
if run 0 dump - <"$TMP/tiny.graph" && has "$OUT" "recurrence"; then
    cp "$OUT" "$TMP/dump1"
    LAST="dump - (round trip)"
    run 0 dump - <"$TMP/dump1" && { cmp -s "$OUT" "$TMP/dump1" || fail "dump is not a fixed point"; }
fi
LAST="check -"
run 0 check - <"$TMP/tiny.graph" && has "$OUT" "<stdin>: ok"
LAST="dump --dims B=2"
run 0 dump --stage=ir --dims B=2 "$TMP/tiny.graph" && has "$OUT" "dim B = 2"

# --- compiled stages: dump --stage naive|fused|llvm|asm --------------------
NADE=$SRC/models/nade.graph FVSBN=$SRC/models/fvsbn.graph
run 0 dump --stage fused "$NADE" --dims D=5,H=4,B=3 && has "$OUT" "program train_step (fused)" &&
    has "$OUT" "recurrence" && has "$OUT" "nade.graph:" &&
    has "$OUT" "0 barriers per step" &&
    has "$OUT" "= sub (kept); h = sigmoid" &&   # the recovered carry, stored by the group that reads it
    has "$OUT" "a2 = add (kept); h = sigmoid" &&   # the forward's next carry, by the sibling group over [B, H]
    if grep -q "_next\[" "$OUT"; then fail "a NADE carry in a ping-pong pair, not updated in place"; fi
run 0 dump --stage naive "$NADE" --dims D=5,H=4,B=3 --fn loglik && has "$OUT" "program loglik (naive)" &&
    has "$OUT" "loop 5 steps"
# every kernel names the graph line it came from, generated gradient code too
for engine in naive fused; do
    run 0 dump --stage $engine "$NADE" --dims D=5,H=4,B=3 --fn train_step && has "$OUT" "nade.graph:" &&
        if grep -q 'nade.graph:0[ -]' "$OUT"; then fail "a $engine kernel on line 0"; fi
done
run 0 dump --stage fused "$FVSBN" --dims D=4 --fn grad_loglik && has "$OUT" "program grad_loglik (fused)"
# An LSTM's gradient keeps the gates z = x Wx + h Wh + b from the forward
# (one stack, not the two products) and its reverse step computes only the
# products of the backward: d_h = dz Wh^T, d_x = dz Wx^T and the two weight
# gradients, never h Wh again. Its fused step reads the carry h in place and
# packs each shared weight once, before the recurrence.
LSTM=$SRC/models/lstm.graph
if run 0 dump --stage opt "$LSTM" && has "$OUT" "lstm_z_kept = recurrence" && has "$OUT" "slice lstm_z_kept = lstm_z_kept"; then
    body=$(sed -n '/recurrence(steps=T, reverse=1)/,/^  }/p' "$OUT")
    grep -q "matmul(h, Wh)" <<<"$body" && fail "the LSTM's reverse step recomputes h Wh"
    [[ $(grep -c "matmul(" <<<"$body") == 4 ]] || fail "the LSTM's reverse step has $(grep -c "matmul(" <<<"$body") products, not 4"
fi
if run 0 dump --stage fused "$LSTM" --dims B=4 && has "$OUT" "pack Wh for every step" && has "$OUT" "pack Wx for every step"; then
    fwd=$(sed -n '/^k[0-9]*_recurrence/,/^k[0-9]*_/p' "$OUT")   # the forward recurrence, its steps as "| ..."
    grep -q "| copy h " <<<"$fwd" && fail "the LSTM's forward step copies its carry h for the product"
fi
# what the fused planner cannot fuse it plans another way, and says so
run 0 dump --stage fused "$SRC/tests/models/residual20.graph" --fn loglik --dims B=3 &&
    has "$OUT" "y6 = add (split off s's group: at most 16 inputs, 64 ops)"
cat >"$TMP/nested.graph" <<'EOF'
dim B
dim T = 3
fn f(x: f32[B, T, T]) -> total
  z = constant(value=0, shape=[B])
  total = recurrence(steps=T) {
    carry acc = z
    slice xt = x, axis=1
    inner = recurrence(steps=T) {
      carry a = acc
      slice xs = xt, axis=1
      a2 = add(a, xs)
      next a = a2
    }
    next acc = inner
  }
end
EOF
run 0 dump --stage fused "$TMP/nested.graph" --fn f --dims B=2 &&
    has "$OUT" "loop 3 steps {  # not fused, a loop of kernels: a nested recurrence"
# B, free in the model, is 100: the initial x : [B, D] holds 400 values
run 0 dump --stage naive "$FVSBN" --dims D=4 --fn sample && has "$OUT" "program sample (naive)" && has "$OUT" "= constant  rows=100" &&
    has "$OUT" "[400])"
run 0 dump --stage llvm "$NADE" --dims D=5,H=4,B=3 && has "$OUT" "define"
run 0 dump --stage llvm "$NADE" --dims D=5,H=4,B=3 --engine naive && has "$OUT" "define"
run 0 dump --stage asm "$NADE" --dims D=5,H=4,B=3 && has "$OUT" "ret"
# every kernel's code is headed by the graph lines it came from, as in the fused listing
for stage in llvm asm; do
    for engine in fused naive; do
        run 0 dump --stage $stage "$NADE" --dims D=5,H=4,B=3 --engine $engine || continue
        if [ $stage = llvm ]; then c=';' code=$(grep -c '^define .*@k[0-9]*_[a-z_0-9]*(' "$OUT"); else
            c='#' code=$(grep -cE '^k[0-9]+_[a-z_0-9]+:' "$OUT"); fi
        heads=$(grep -cE "^$c k[0-9]+_[a-z_0-9]+  # .*nade.graph:[1-9]" "$OUT")
        ((code > 0 && heads == code)) || fail "dump --stage $stage --engine $engine: $heads kernel heads for $code kernels"
        if [ $stage$engine = llvmnaive ]; then has "$OUT" "; k0_broadcast  # $NADE:25  a0 = broadcast"; fi
    done
done
# line tables: the fused recurrence's code names nade.graph and h = sigmoid(a)'s line
line=$(grep -n 'h = sigmoid(a)' "$NADE" | cut -d: -f1)
run 0 dump --stage asm "$NADE" --dims D=5,H=4,B=3 && has "$OUT" '"nade.graph"' && grep -qE "^\s*\.loc\s+[0-9]+ $line [0-9]" "$OUT" ||
    fail "dump --stage asm: no .loc at nade.graph:$line"
run 1 dump --stage fused "$FVSBN" --dims D=4 --fn nope && has "$ERR" "no fn 'nope'"
run 1 dump --stage fused "$TMP/broken.graph" && has "$ERR" "broken.graph:3:7: error:"
run 2 dump "$FVSBN" --fn loglik && has "$ERR" "--fn goes with the compiled stages" &&
    has "$ERR" "see 'arjit dump --help'"
run 2 dump --stage fused "$FVSBN" --engine naive && has "$ERR" "--engine goes with --stage llvm or asm"
run 2 dump --stage llvm "$FVSBN" --engine interp && has "$ERR" "bad value 'interp' for --engine"

# --- bench ------------------------------------------------------------------
# A cache of its own, so the third compile is a hit whatever ran before.
export ARJIT_CACHE=$TMP/cache
if run 0 bench "$FVSBN" --dims D=8 --batch 4 --steps 3; then
    for e in interp naive fused; do
        grep -q "^$e " "$OUT" || fail "bench: no row for $e"
    done
    has "$OUT" "D=8, B=4" && has "$OUT" "(hit)" && has "$OUT" "speed-up of fused" && has "$OUT" "memory: params"
fi
if run 0 bench "$FVSBN" --dims D=8 --batch 4 --steps 3 --json; then
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys
b = json.load(sys.stdin)
assert [e["engine"] for e in b["engines"]] == ["interp", "naive", "fused"], b
assert b["engines"][2]["cache_hit"] and b["engines"][2]["steps"] == 3 and b["batch"] == 4, b
assert "fused_over_naive" in b["speedup"] and b["memory"]["total"] > 0, b' <"$OUT" ||
            fail "bench --json: not the JSON expected"
    else
        has "$OUT" '"engines"' && has "$OUT" '"ms_median"' && has "$OUT" '"speedup"'
    fi
fi
run 0 bench "$NADE" --dims D=5,H=4 --batch 3 --steps 2 --engine fused --profile && has "$OUT" "profile: fused" &&
    has "$OUT" "share" && { ! grep -q "^interp " "$OUT" || fail "bench --engine fused ran interp"; }
run 2 bench "$FVSBN" --steps 0 && has "$ERR" "bad value '0' for --steps" && has "$ERR" "see 'arjit bench --help'"
run 2 bench "$FVSBN" --engine gpu && has "$ERR" "expected all, interp, naive or fused"
run 2 bench "$FVSBN" --json=yes && has "$ERR" "flag '--json' of 'bench' takes no value"
run 2 bench "$FVSBN" --opt adamw && has "$ERR" "expected adam, sgd or rmsprop"
run 1 bench "$TMP/broken.graph" && has "$ERR" "broken.graph:3:7: error:"
# a dim of 0: empty tensors on every engine (FVSBN's product matmul(x, wm, tb=1)
# then has K = N = 0, and no B to pack)
for dims in D=0 B=0; do
    run 0 bench "$FVSBN" --dims $dims --batch 3 --steps 1 && has "$OUT" "$dims" &&
        for e in interp naive fused; do grep -q "^$e " "$OUT" || fail "bench --dims $dims: no row for $e"; done
done
run 0 bench "$NADE" --dims D=4,H=0 --batch 3 --steps 1 && has "$OUT" "H=0"
run 0 dump --stage fused "$FVSBN" --dims D=0 --fn loglik && has "$OUT" "program loglik (fused)"
unset ARJIT_CACHE

# LLVM's diagnostics stay off stderr: compiled afresh, the fused gradient of
# an RNN has a tail loop that the vectoriser, told to vectorise it, gives up
# on ("loop not vectorized" remark and warning)
cat >"$TMP/rnn.graph" <<'EOF'
dim B
dim T = 4
dim D = 3
dim H = 2
param U : f32[D, H] = normal(0.1)
param W : f32[H, H] = normal(0.1)
param c : f32[T, H] = zeros
param h0 : f32[H] = zeros
fn loss(x : f32[B, T, D]) -> l
  hb = broadcast(h0, shape=[B, H])
  hT, hs = recurrence(steps=T) {
    carry h = hb
    slice xt = x, axis=1
    slice ct = c, axis=0
    use W
    a = matmul(xt, U)
    r = matmul(h, W)
    s1 = add(a, r)
    s2 = add(s1, ct)
    hn = tanh(s2)
    next h = hn
    stack hn, axis=1
  }
  sq = square(hs)
  st = sum(sq, axis=[1, 2])
  f = sum(hT, axis=1)
  l = add(st, f)
end
EOF
export ARJIT_CACHE=off
run 0 dump --stage fused "$TMP/rnn.graph" --dims B=2 --fn grad_loss && has "$OUT" "program grad_loss (fused)" &&
    if [[ -s $ERR ]]; then fail "dump --stage fused: LLVM diagnostics on stderr"; fi
unset ARJIT_CACHE

# --- every model in the repository ---------------------------------------
shopt -s nullglob
models=("$SRC"/models/*.graph)
if ((${#models[@]} == 0)); then
    echo "note: no models/*.graph yet: model checks not run"
fi
for f in "${models[@]}"; do
    LAST="check $f"
    run 0 check "$f" && has "$OUT" "$f: ok"
    LAST="dump $f"
    if run 0 dump "$f"; then
        cp "$OUT" "$TMP/model.dump"
        run 0 dump - <"$TMP/model.dump" && { cmp -s "$OUT" "$TMP/model.dump" || fail "dump of $f is not a fixed point"; }
    fi
    # the gradient graph is graph syntax too: it must parse back to itself
    LAST="dump --stage grad $f"
    if run 0 dump --stage grad "$f" && has "$OUT" "fn grad_"; then
        cp "$OUT" "$TMP/grad.dump"
        run 0 dump - <"$TMP/grad.dump" && { cmp -s "$OUT" "$TMP/grad.dump" || fail "grad dump of $f is not a fixed point"; }
    fi
    # so is the simplified one, and it is smaller
    LAST="dump --stage opt $f"
    if run 0 dump --stage opt "$f" && has "$OUT" "fn grad_"; then
        cp "$OUT" "$TMP/opt.dump"
        (($(wc -l <"$TMP/opt.dump") < $(wc -l <"$TMP/grad.dump"))) || fail "opt dump of $f is no shorter than grad"
        run 0 dump - <"$TMP/opt.dump" && { cmp -s "$OUT" "$TMP/opt.dump" || fail "opt dump of $f is not a fixed point"; }
    fi
done
echo "models checked: ${#models[@]}"

echo "cli: $passes passed, $fails failed"
((fails == 0))
