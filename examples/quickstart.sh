#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to arjit checking every model:
# installs what is missing, builds Release into build/, then runs
# `arjit check` on each models/*.graph and prints its summary.
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
