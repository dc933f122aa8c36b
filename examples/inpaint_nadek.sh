#!/usr/bin/env bash
# Inpainting with NADE-k (models/nade_k.graph, Raiko et al. 2014): the bottom
# half of N test digits of binarized MNIST filled in from their top half.
# Trains NADE-k briefly unless CKPT=FILE names a checkpoint of it, runs its
# fn inpaint (`arjit sample --fn inpaint`: the original, the masked input
# and the fill-in, the missing pixels' probabilities after k rounds) and
# writes them as a PNG, one row per digit: original | masked | filled in.
#
#   examples/inpaint_nadek.sh [OUT.png]      default samples/inpaint_nadek.png
#   N=8 STEPS=500 CKPT=... JOBS=2            how many digits, training steps, a checkpoint
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-samples/inpaint_nadek.png}
N=${N:-8}
[[ $N =~ ^[1-9][0-9]{0,3}$ ]] || { echo "inpaint_nadek: N must be 1 to 9999, got '$N'" >&2; exit 2; }
[[ $out == *.png ]] || { echo "inpaint_nadek: the output must end in .png, got '$out'" >&2; exit 2; }

[[ -x build/arjit ]] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j "${JOBS:-2}"; }
mkdir -p "$(dirname "$out")"
ckpt=${CKPT:-}
if [[ -z $ckpt ]]; then
    ckpt=$(dirname "$out")/nade_k.ckpt
    build/arjit train models/nade_k.graph --data mnist-bin --epochs 1 --max-steps "${STEPS:-500}" \
        --valid-examples 1000 --lr 3e-3 --seed 1 --save "$ckpt"
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
build/arjit sample models/nade_k.graph --ckpt "$ckpt" --fn inpaint -n "$N" --data mnist-bin --split test --out "$tmp"

# N lines of 3 x 784 values in [0, 1] -> one grey PNG (Python's standard library only)
/usr/bin/env python3 - "$tmp" "$out" <<'PY'
import struct, sys, zlib
rows = [[float(v) for v in line.split()] for line in open(sys.argv[1]) if line.strip()]
side, gap = 28, 2
W = 3 * side + 4 * gap
img = []
for r in rows:
    if len(r) != 3 * side * side:
        sys.exit(f"inpaint_nadek: {len(r)} values per digit, expected {3 * side * side}")
    img += [[128] * W for _ in range(gap)]
    for y in range(side):
        line = [128] * gap
        for p in range(3):
            line += [round(255 * min(max(v, 0.0), 1.0)) for v in r[p * side * side + y * side:][:side]] + [128] * gap
        img.append(line)
img += [[128] * W for _ in range(gap)]
raw = b"".join(b"\0" + bytes(l) for l in img)
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, len(img), 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
open(sys.argv[2], "wb").write(png)
print(f"wrote {len(rows)} digits (original | top half | filled in) to {sys.argv[2]}")
PY
