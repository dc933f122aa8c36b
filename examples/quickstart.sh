#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to a trained model: installs what
# is missing, builds Release into build/, checks every models/*.graph, then
# trains NADE (H=500) on binarized MNIST with the fused JIT engine for a few
# epochs (under 2 minutes on 2 cores: test NLL about 92), prints it and writes a grid
# of samples to samples/nade.png. README.md says how to train to the papers'
# numbers (docs/results.md has the full runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. tests/setup-deps.sh
arjit_setup_deps

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "${JOBS:-2}"

shopt -s nullglob
models=(models/*.graph)
if ((${#models[@]} == 0)); then
    echo "quickstart: no models under models/ yet" >&2
    exit 1
fi
build/arjit check "${models[@]}"

# A real model on real data: the data is found in $ARJIT_DATA, ./data or
# ../shared/data (docs/datasets.md); when it is in none of them, `arjit data
# fetch` downloads it into ./data, sha256-checked.
have_data() {
    local dir
    for dir in "${ARJIT_DATA:-}" data ../shared/data; do
        [[ -n $dir && ( -f $dir/$1 || -f $dir/$1.gz ) ]] && return 0
    done
    return 1
}
have_data binarized_mnist_train.amat || build/arjit data fetch mnist-bin
# EPOCHS=N trains longer (docs/results.md: 88.9 nats takes about 20 epochs).
mkdir -p samples
build/arjit train models/nade.graph --data mnist-bin --epochs "${EPOCHS:-5}" --batch 100 \
    --opt adam --lr 3e-3 --schedule cosine --seed 1 --engine fused --threads 2 --save samples/nade.ckpt
build/arjit eval models/nade.graph --ckpt samples/nade.ckpt --split test --engine fused
build/arjit sample models/nade.graph --ckpt samples/nade.ckpt -n 64 --seed 1 --out samples/nade.png --engine fused
echo "quickstart: samples written to samples/nade.png"
