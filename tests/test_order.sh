#!/usr/bin/env bash
# `arjit check --order`: every model in models/ is autoregressive in its
# order (at small dims, so the interpreter's probes are quick), and the
# broken ones of tests/models/ fail, naming the leaking pair and the line
# where the leak enters.
#
#   tests/test_order.sh path/to/arjit     (ctest runs it as `order`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"

# small dims: the ones of this list a model declares
small() {
    local spec="" kv
    for kv in D=7 H=5 W=4 T=5 V=7 E=8 L=2 K=3 C=4 F=3; do
        grep -qE "^dim ${kv%=*}( |=|$)" "$1" && spec+=${spec:+,}$kv
    done
    echo "$spec"
}

n=0
for f in "$SRC"/models/*.graph; do
    # BERT is in models/ for contrast: its masked-token terms see both sides
    if [[ $(basename "$f") == bert.graph ]]; then
        run 1 check --order --dims "$(small "$f")" "$f" && has "$ERR" "depends on variable 1 (a later variable)"
        continue
    fi
    run 0 check --order --dims "$(small "$f")" "$f" && has "$OUT" "order: ok: each of the" && n=$((n + 1))
done
((n >= 6)) || fail "only $n models checked"
# the order-agnostic MADE passes in the order it draws, not the index order
if [[ -f $SRC/models/made_oa.graph ]]; then
    run 0 check --order --dims D=7,H=5 "$SRC/models/made_oa.graph" && has "$OUT" "in the order the model draws, not x_0 .. x_6: x_"
fi

# broken FILE TEXT...: the check fails (exit 1) and says each TEXT
broken() {
    local f=$SRC/tests/models/$1
    shift
    run 1 check --order "$f" || return
    local t
    for t in "$@"; do has "$ERR" "$t"; done
}
broken pixelcnn_broken_mask_b.graph "pixelcnn_broken_mask_b.graph:20:12: error: order: the conditional of variable 0 depends on variable 0 (itself" \
    "conv2d(img, Win, mask=B)"
broken made_broken_mask.graph "made_broken_mask.graph:18:13: error: order: the conditional of variable 0 depends on variable 0 (itself" \
    "kind=made_hidden"
broken fvsbn_broken_order.graph "fvsbn_broken_order.graph:15:11: error: order: the conditional of variable 0 depends on variable 1 (a later variable)"

# NADE whose hidden units already hold x_i when they predict it: the
# likelihood is inside the recurrence, so the self check is by normalisation
sed 's/    h = sigmoid(a) .*/    h = sigmoid(a + unsqueeze(xi, axis=1) * wi)/' "$SRC/models/nade.graph" >"$TMP/nade_leak.graph"
grep -q 'h = sigmoid(a + unsqueeze' "$TMP/nade_leak.graph" || fail "models/nade.graph changed: update the sed"
run 1 check --order --dims D=7,H=5 "$TMP/nade_leak.graph" &&
    has "$ERR" "nade_leak.graph:26:11: error: order: the conditional of variable" && has "$ERR" "(itself: its probabilities over x_"

# a model whose loglik is not a sum of per-variable terms is refused, not passed
cat >"$TMP/notsum.graph" <<'G'
dim D = 3
dim B
param w : f32[D] = ones
fn loglik(x : f32[B, D]) -> ll
  ll = sum(x * w, axis=1) * 2
end
G
run 1 check --order "$TMP/notsum.graph" && has "$ERR" "must take x : [B, D] and return sum(lp, axis=1)"
run 2 check --order --seed x "$SRC/models/fvsbn.graph" && has "$ERR" "--seed"

echo "order: $passes passed, $fails failed"
((fails == 0))
