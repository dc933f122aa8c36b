#!/usr/bin/env bash
# The image models (PixelCNN, Gated PixelCNN, Row LSTM, Diagonal BiLSTM) at
# 4x4 and 8 channels learn synthetic images, a vertical bar in one of the 4
# columns (NLL ln 4 = 1.39 nats at best, 16 ln 2 = 11.09 for coin flips),
# and draw them: PNG grids, and as text many whole bars (a coin-flip
# image is one with probability 4/65536).
#
#   tests/test_image_models.sh path/to/arjit     (ctest runs it as `image_models`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"

# 4x4 IDX images (the `mnist` spec reads any size): row r = the one-hot bar column
idx() {   # idx FILE COUNT
    local n=$2 bytes
    bytes=$(printf '\\x00\\x00\\x08\\x03\\x00\\x00\\x%02x\\x%02x\\x00\\x00\\x00\\x04\\x00\\x00\\x00\\x04' $((n >> 8)) $((n & 255)))
    for ((i = 0; i < n; i++)); do
        local col=$((RANDOM % 4)) row="" j
        for ((j = 0; j < 4; j++)); do row+=$( ((j == col)) && echo '\xff' || echo '\x00'); done
        bytes+=$row$row$row$row
    done
    printf "$bytes" >"$1"
}
RANDOM=7
export ARJIT_DATA=$TMP/data
mkdir -p "$ARJIT_DATA" && for split in train-images-idx3-ubyte:400 t10k-images-idx3-ubyte:100; do
    idx "$ARJIT_DATA/${split%:*}" "${split#*:}"
done

for m in pixelcnn:H=4,W=4,C=8,F=4,L=2 gated_pixelcnn:H=4,W=4,C=8,L=2 row_lstm:H=4,W=4,C=8 diag_bilstm:H=4,W=4,C=8; do
    name=${m%%:*} dims=${m#*:}
    run 0 train "$SRC/models/$name.graph" --data mnist --dims "$dims" --epochs 20 --batch 20 --lr 0.01 --schedule constant --patience 20 --threads 1 \
        --save "$TMP/$name.ck" || continue
    nll=$(sed -n 's/.*best valid NLL \([0-9.]*\).*/\1/p' "$OUT")
    awk -v x="$nll" 'BEGIN { exit !(x != "" && x < 2.5) }' || fail "$name: valid NLL '$nll', expected < 2.5"
    run 0 sample "$SRC/models/$name.graph" --ckpt "$TMP/$name.ck" -n 16 --out "$TMP/$name.png" &&
        has "$OUT" "wrote 16 samples of 4x4 to $TMP/$name.png" &&
        [[ $(head -c 4 "$TMP/$name.png" | od -An -tx1 | tr -d ' ') == 89504e47 ]] || fail "$name: no PNG"
    run 0 sample "$SRC/models/$name.graph" --ckpt "$TMP/$name.ck" -n 32 --out "$TMP/$name.txt" || continue
    # a bar: one 1 per row, in the same column on every row
    bars=$(awk '{ ok = 1; for (r = 0; r < 4; r++) { s = 0; for (c = 1; c <= 4; c++) { s += $(4*r+c); if ($(4*r+c) != $c) ok = 0 } if (s != 1) ok = 0 } n += ok } END { print n }' "$TMP/$name.txt")
    echo "$name: valid NLL $nll, $bars of 32 samples are bars"
    ((bars >= 10)) || fail "$name: $bars of 32 samples are bars, expected at least 10 (coin flips: about 0)"
done

echo "image_models: $passes passed, $fails failed"
((fails == 0))
