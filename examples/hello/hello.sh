#!/bin/bash
# The lecture's example: p("hello") under a character RNN over {h, e, l, o}
# as the product of its conditionals, before and after training on the
# word. Fails (exit 1) if training did not make the word likely (p > 0.9).
#
#   examples/hello/hello.sh [HELLO_BINARY]   (default: build/tests/hello,
#   made by `cmake --build build --target hello`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../build/tests/hello}
out=$("$bin" "$here/hello.graph" 100)
echo "$out"
after=$(echo "$out" | tail -1 | sed 's/.*= //')
if ! awk -v p="$after" 'BEGIN { exit !(p > 0.9) }'; then
  echo "hello.sh: p(hello) is $after after training, expected > 0.9" >&2
  exit 1
fi
