#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to a trained model: installs what
# is missing, builds Release into build/, checks every models/*.graph, then
# trains FVSBN on binarized MNIST for one epoch (about two minutes on 2 cores
# with the reference interpreter), prints its test NLL and writes a grid of
# samples to samples/fvsbn.png. README.md says how to train to the papers'
# numbers.
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
# ../shared/data (docs/datasets.md).
mkdir -p samples
build/arjit train models/fvsbn.graph --data mnist-bin --epochs 1 --batch 100 \
    --opt adam --lr 2e-2 --seed 1 --save samples/fvsbn.ckpt
build/arjit eval models/fvsbn.graph --ckpt samples/fvsbn.ckpt --split test
build/arjit sample models/fvsbn.graph --ckpt samples/fvsbn.ckpt -n 64 --seed 1 --out samples/fvsbn.png
echo "quickstart: samples written to samples/fvsbn.png"
