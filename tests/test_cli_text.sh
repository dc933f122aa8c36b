#!/usr/bin/env bash
# `arjit train | eval` on text: a tiny LSTM and GRU trained for a few steps
# on a small generated text, eval in nats and bits per character, an exact
# resume, the checkpoint's vocabulary, and bad files named in errors; the
# generated seq2seq task reverse:N with eval's exact-match accuracy.
#
#   tests/test_cli_text.sh path/to/arjit     (ctest runs it as `cli_text`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"
LSTM=$SRC/models/lstm.graph
SMALL=(--dims T=8,H=16,E=8 --batch 4 --engine interp --schedule constant)   # the cosine of lstm's recipe spans --max-steps

# 3200 bytes of lines over a 16-byte alphabet (train 2880, valid 320)
for ((i = 0; i < 160; i++)); do echo "a cat sat $((i % 7)) on mats"; done >"$TMP/cats.txt"
TEXT=text:$TMP/cats.txt

# ---------------------------------------------------------------- train, eval, resume
run 0 train "$LSTM" --data "$TEXT" "${SMALL[@]}" --max-steps 6 --lr 0.01 --save "$TMP/l.ck" &&
    has "$OUT" "(6/89 steps): train NLL" && has "$OUT" "valid NLL"
run 0 eval "$LSTM" --ckpt "$TMP/l.ck" --engine interp && has "$OUT" "nats/char" && has "$OUT" "bits/char" &&
    has "$OUT" "(39 windows of 8 characters, $TEXT)"
# bits = nats / ln 2, and a few Adam steps already beat the uniform log 65
awk '{ n = $3; b = $5; if (b * log(2) - n > 1e-3 || n - b * log(2) > 1e-3 || n >= log(65)) exit 1 }' "$OUT" ||
    fail "eval: bits/char is not nats/char / ln 2, or no better than uniform"

# 6 steps, then 4 more resumed, end exactly where 10 straight steps do
run 0 train "$LSTM" --resume "$TMP/l.ck.last" --max-steps 10 --engine interp --schedule constant --lr 0.01 --save "$TMP/r.ck" &&
    has "$ERR" "resuming $TMP/l.ck.last at epoch 1, example 24 (step 6)"
run 0 train "$LSTM" --data "$TEXT" "${SMALL[@]}" --max-steps 10 --lr 0.01 --save "$TMP/s.ck"
run 0 eval "$LSTM" --ckpt "$TMP/r.ck.last" --engine interp && cp "$OUT" "$TMP/resumed"
run 0 eval "$LSTM" --ckpt "$TMP/s.ck.last" --engine interp && cmp -s "$OUT" "$TMP/resumed" ||
    fail "a resumed run differs from an uninterrupted one: $(cat "$TMP/resumed")"

run 0 train "$SRC/models/gru.graph" --data "$TEXT" "${SMALL[@]}" --max-steps 3 && has "$OUT" "valid NLL"
if [[ -f $SRC/../shared/data/tinyshakespeare.txt ]]; then
    run 0 train "$LSTM" --data shakespeare --dims T=8,H=8,E=4 --batch 2 --engine interp --max-steps 1 \
        --valid-examples 2 && has "$OUT" "epoch 1 (1/"
fi

# ---------------------------------------------------------------- the checkpoint's vocabulary
# text with a byte the checkpoint lacks ('Z'); with fewer bytes it is re-encoded
{ echo "a Zebra"; cat "$TMP/cats.txt"; } >"$TMP/zebra.txt"
run 1 eval "$LSTM" --ckpt "$TMP/l.ck" --engine interp --data "text:$TMP/zebra.txt" &&
    has "$ERR" "$TMP/zebra.txt: error: its vocabulary differs from the 16 bytes $TMP/l.ck was trained with: it has byte 0x5a 'Z'"
head -c 1000 "$TMP/cats.txt" | tr -d 0-9 >"$TMP/nodigits.txt"
run 0 eval "$LSTM" --ckpt "$TMP/l.ck" --engine interp --data "text:$TMP/nodigits.txt" --split train && has "$OUT" "nats/char"
run 1 train "$LSTM" --resume "$TMP/l.ck.last" --engine interp --data "text:$TMP/zebra.txt" && has "$ERR" "byte 0x5a 'Z'"
run 1 eval "$LSTM" --ckpt "$TMP/l.ck" --engine interp --data mnist-bin && has "$ERR" "$TMP/l.ck: error: it was trained on text"

# ---------------------------------------------------------------- errors naming the file
run 1 train "$LSTM" --data "$TEXT" "${SMALL[@]}" --dims T=8,H=16,E=8,V=12 &&
    has "$ERR" "vocabulary V = 12 is smaller than the 16 distinct bytes of '$TEXT' ($TMP/cats.txt): give --dims V=16"
: >"$TMP/empty.txt"
run 1 train "$LSTM" --data "text:$TMP/empty.txt" "${SMALL[@]}" && has "$ERR" "$TMP/empty.txt: error: empty file"
printf 'ab\ncd\0ef' >"$TMP/nul.bin"
run 1 train "$LSTM" --data "text:$TMP/nul.bin" "${SMALL[@]}" && has "$ERR" "$TMP/nul.bin:2:3: error: byte 0x00 at offset 5: a binary file"
run 1 train "$LSTM" --data "$TEXT" --dims T=500,H=16,E=8 --batch 4 --engine interp &&
    has "$ERR" "$TMP/cats.txt: error: the valid split has 320 characters, fewer than one window of T + 1 = 501"
run 1 train "$LSTM" --data "$TEXT" --dims T=300,H=16,E=8 --batch 20 --engine interp &&
    has "$ERR" "$TMP/cats.txt: error: the train split has 9 examples (windows of T + 1 tokens, T apart), fewer than one batch of 20"
run 1 train "$SRC/models/fvsbn.graph" --data "$TEXT" --dims D=8 && has "$ERR" "'$TEXT' is text: loglik's input x" &&
    has "$ERR" "must be token windows i32[B, T]"

# ---------------------------------------------------------------- reverse:N, the seq2seq task
COPY=$SRC/tests/models/copy_seq.graph
run 0 train "$COPY" --data reverse:1 --batch 50 --max-steps 3 --engine interp --save "$TMP/c.ck" &&
    has "$OUT" "(3/1000 steps)"
run 0 eval "$COPY" --ckpt "$TMP/c.ck" --engine interp && has "$OUT" "(5000 examples of 1 values, reverse:1)" &&
    has "$OUT" "test exact match 100.00% (fn predict, greedy)"
# copying is right on the palindromes of 2 digits only: 1 in 10
run 0 eval "$COPY" --ckpt "$TMP/c.ck" --engine interp --dims N=2 --data reverse:2 --split valid &&
    awk '/exact match/ { v = $4 + 0; if (v < 8 || v > 12) exit 1 }' "$OUT" || fail "reverse:2 copy accuracy not near 10%"
run 0 train "$SRC/models/transformer.graph" --data reverse:3 --dims N=3,E=8,L=1 --batch 20 --max-steps 2 \
    --valid-examples 40 --engine interp --save "$TMP/t.ck" && has "$OUT" "valid NLL"
run 0 eval "$SRC/models/transformer.graph" --ckpt "$TMP/t.ck" --engine interp --split valid && has "$OUT" "valid exact match"
# the encoder-decoder's fn sample(src): sources from the data's rows, or --prompt's
run 0 sample "$SRC/models/transformer.graph" --ckpt "$TMP/t.ck" -n 2 --engine interp --split valid &&
    grep -Eqx '[0-9]{3} -> [0-9^]{3}' "$OUT" && [[ $(wc -l <"$OUT") == 2 ]] ||
    fail "sample of the encoder-decoder: not 2 lines 'source -> sample': $(cat "$OUT")"
run 0 sample "$SRC/models/transformer.graph" --ckpt "$TMP/t.ck" -n 2 --engine interp --prompt 907 &&
    [[ $(grep -c '^907 -> ' "$OUT") == 2 ]] || fail "sample --prompt 907: not the prompt as both sources: $(cat "$OUT")"
run 1 sample "$SRC/models/transformer.graph" --ckpt "$TMP/t.ck" -n 1 --engine interp --prompt 90 &&
    has "$ERR" "--prompt: error: has 2 bytes: fn sample's source 'src' is 3 tokens"
run 1 sample "$SRC/models/transformer.graph" --ckpt "$TMP/t.ck" -n 1 --engine interp --data "$TEXT" &&
    has "$ERR" "fn sample's 'src' is a source sequence, i32[B, 3]; $TEXT has no rows of tokens to take it from"
run 1 train "$COPY" --data reverse:2 --batch 50 --engine interp &&
    has "$ERR" "'reverse:2' has examples of 4 tokens: loglik's inputs must be i32[B, k] whose k add up to that"
run 1 train "$COPY" --data reverse:1 --dims V=9 --batch 50 --engine interp &&
    has "$ERR" "vocabulary V = 9 is smaller than the 11 distinct tokens of 'reverse:1'"
run 1 train "$COPY" --data reverse:0 && has "$ERR" "bad dataset 'reverse:0': reverse:N takes a length N from 1 to 256"

# ---------------------------------------------------------------- sampling text
# the sampler derived from fn loglik: the prompt kept and streamed, the same
# text from the full form, bytes outside the vocabulary named
run 0 sample "$LSTM" --ckpt "$TMP/l.ck" -n 1 --prompt "a cat" --length 12 --engine interp --seed 4 &&
    [[ $(head -c 5 "$OUT") == "a cat" ]] && [[ $(wc -c <"$OUT") == 13 ]] && cp "$OUT" "$TMP/inc.txt" ||
    fail "sample --prompt: not 12 characters starting with the prompt: '$(cat "$OUT")'"
run 0 sample "$LSTM" --ckpt "$TMP/l.ck" -n 1 --prompt "a cat" --length 12 --engine interp --seed 4 --naive-sampling &&
    cmp -s "$OUT" "$TMP/inc.txt" || fail "--naive-sampling drew other text: '$(cat "$OUT")'"
run 0 sample "$LSTM" --ckpt "$TMP/l.ck" -n 3 --length 20 --engine interp --out "$TMP/three.txt" &&
    [[ $(wc -c <"$TMP/three.txt") == 63 ]] || fail "sample -n 3 --length 20: not 3 times 20 characters and a newline"
run 1 sample "$LSTM" --ckpt "$TMP/l.ck" -n 1 --prompt "a dog" --engine interp &&
    has "$ERR" "--prompt: error: byte 3 (0x64) is not in the vocabulary of $TMP/l.ck"

echo "cli_text: $passes passed, $fails failed"
((fails == 0))
