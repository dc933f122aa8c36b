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
run 0 --help && has "$OUT" "check" && has "$OUT" "dump"
run 0 -h && has "$OUT" "commands:"
run 2 && has "$ERR" "usage:"
for cmd in check dump; do
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
