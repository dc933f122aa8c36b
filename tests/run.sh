#!/usr/bin/env bash
# Everything CI checks, from a fresh Debian 12 machine (run as root) or a
# developer's box, from any directory:
#   1. install missing packages (tests/setup-deps.sh)
#   2. Release build into build/, ctest
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build into build-asan/, ctest
#   4. libFuzzer build (clang) into build-fuzz/, a short run from the seed corpus
# Every stage runs even if an earlier one failed (except those that need its
# build); a summary follows and the exit status is non-zero on any failure.
#
#   JOBS=2 FUZZ_RUNS=200000 tests/run.sh
set -uo pipefail   # no -e: a failed stage is recorded, not fatal

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
JOBS=${JOBS:-2}
FUZZ_RUNS=${FUZZ_RUNS:-200000}

summary=()
failed=0

# stage NAME CMD...: run CMD, time it, record ok/FAILED; returns CMD's status.
stage() {
    local name=$1 start=$SECONDS status=ok
    shift
    echo
    echo "==== $name"
    "$@" || { status=FAILED; failed=1; }
    summary+=("$(printf '  %-30s %-8s %5ds' "$name" "$status" $((SECONDS - start)))")
    [[ $status == ok ]]
}
skip() {
    summary+=("$(printf '  %-30s %-8s' "$1" "skipped ($2)")")
}

configure_and_build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j "$JOBS"
}

run_ctest() {
    ctest --test-dir "$1" --output-on-failure -j "$JOBS"
}

# Does LeakSanitizer work here? It stops the process under ptrace-like
# restrictions some sandboxes impose ("LeakSanitizer has encountered a fatal
# error"); there leak checks must be off or every test would fail. It works on
# a normal Debian 12 machine and in the sandbox this was written in.
lsan_works() {
    local dir rc
    dir=$(mktemp -d) || return 1
    printf '#include <stdlib.h>\nvoid *volatile p;\nint main(void) { p = malloc(7); p = 0; return 0; }\n' >"$dir/leak.c"
    gcc -fsanitize=address -g "$dir/leak.c" -o "$dir/leak" 2>/dev/null &&
        ASAN_OPTIONS=detect_leaks=1 "$dir/leak" 2>"$dir/err"
    grep -q 'detected memory leaks' "$dir/err"
    rc=$?
    rm -rf "$dir"
    return $rc
}

# libFuzzer writes new inputs into its first corpus directory, so that is a
# scratch one under build-fuzz/; models/ and tests/corpus/ are only read.
run_fuzz() {
    local seeds=() opts=() d
    for d in models tests/corpus; do
        [[ -d $d ]] && seeds+=("$d")
    done
    [[ -f tests/fuzz_parse.dict ]] && opts+=(-dict=tests/fuzz_parse.dict)
    rm -rf build-fuzz/corpus && mkdir -p build-fuzz/corpus build-fuzz/artifacts || return 1
    build-fuzz/fuzz_parse -runs="$FUZZ_RUNS" -seed=1 -max_total_time=120 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1 \
        "${opts[@]}" build-fuzz/corpus "${seeds[@]}"
}

T0=$SECONDS
# shellcheck source=tests/setup-deps.sh
. tests/setup-deps.sh
if ! stage "install dependencies" arjit_setup_deps --fuzz; then
    echo "run.sh: cannot install the dependencies; nothing else can run" >&2
    exit 1
fi

if stage "release: build" configure_and_build build -DCMAKE_BUILD_TYPE=Release; then
    stage "release: ctest" run_ctest build
else
    skip "release: ctest" "no build"
fi

# Debug keeps assert(); -O1 keeps the sanitized tests quick.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if lsan_works; then
    export ASAN_OPTIONS=detect_leaks=1
else
    echo "run.sh: LeakSanitizer does not work here (ptrace restricted?): leak checks off" >&2
    export ASAN_OPTIONS=detect_leaks=0
    summary+=("  (LeakSanitizer unavailable here: ASan ran with detect_leaks=0)")
fi
if stage "asan+ubsan: build" configure_and_build build-asan -DARJIT_SANITIZE=ON \
        -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1"; then
    stage "asan+ubsan: ctest" run_ctest build-asan
else
    skip "asan+ubsan: ctest" "no build"
fi

if stage "fuzz: build (clang)" configure_and_build build-fuzz -DCMAKE_C_COMPILER=clang \
        -DARJIT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    stage "fuzz: $FUZZ_RUNS runs from seeds" run_fuzz
else
    skip "fuzz: run" "no build"
fi

echo
echo "==== summary"
printf '%s\n' "${summary[@]}"
if ((failed)); then
    echo "FAILED after $((SECONDS - T0))s"
    exit 1
fi
echo "all passed in $((SECONDS - T0))s"
