#!/usr/bin/env bash
# ARJIT_JIT_DEBUG=gdb,perf: the JIT's objects registered with gdb (its
# kernels and their graph lines resolve in a debugger) and written to
# perf's jitdump (kernel names and graph lines for perf report/annotate).
#
#   tests/test_jit_debug.sh path/to/arjit     (ctest runs it as `jit_debug`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"
NADE=$SRC/models/nade.graph
BENCH=(bench "$NADE" --batch 4 --steps 1 --engine fused --threads 1)

# ---------------------------------------------------------------- perf's jitdump
ARJIT_JIT_DEBUG=perf JITDUMPDIR=$TMP run 0 "${BENCH[@]}"
dump=$(find "$TMP/.debug/jit" -name 'jit-*.dump' 2>/dev/null | head -1)
[[ -n $dump ]] || fail "ARJIT_JIT_DEBUG=perf wrote no jit-PID.dump under \$JITDUMPDIR/.debug/jit"
# its code-load records name the kernels, its debug records the graph file
[[ -n $dump ]] && grep -aq '_recurrence' "$dump" && grep -aqF "$NADE" "$dump" ||
    fail "the jitdump names no recurrence kernel or not $NADE"
# without the variable there is no dump
rm -rf "$TMP/.debug"
JITDUMPDIR=$TMP run 0 "${BENCH[@]}" && [[ ! -e $TMP/.debug ]] || fail "a jitdump written without ARJIT_JIT_DEBUG"

# ---------------------------------------------------------------- gdb
# bench compiles thrice (cold, cached, timed): at the third aj_jit_loaded
# graph line 33 (NADE's conditional) is code in a recurrence kernel, and
# breakpoints on the recurrence kernels stop in one; without the
# registration gdb knows neither
BREAK_KERNELS='python import re; [gdb.Breakpoint(k) for k in re.findall(r"\b(k[0-9]+_recurrence)\(", gdb.execute("info functions _recurrence", to_string=True))]'
GDB=(gdb -q -batch -ex 'break aj_jit_loaded' -ex 'ignore 1 2' -ex run -ex delete -ex 'info line nade.graph:33'
     -ex "$BREAK_KERNELS" -ex continue -ex 'bt 1' --args "$ARJIT" "${BENCH[@]}")
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0   # LeakSanitizer refuses to run under ptrace
LAST="ARJIT_JIT_DEBUG=gdb ${GDB[*]}"
ARJIT_JIT_DEBUG=gdb "${GDB[@]}" </dev/null >"$OUT" 2>"$ERR"
grep -Eq 'Line 33 of "nade.graph" starts at address 0x[0-9a-f]+ <k[0-9]+_recurrence' "$OUT" ||
    fail "gdb does not place nade.graph:33 in a kernel"
grep -Eq '^#0 .* in k[0-9]+_recurrence' "$OUT" && passes=$((passes + 1)) || fail "gdb did not stop in a recurrence kernel"
LAST="${GDB[*]}"
"${GDB[@]}" </dev/null >"$OUT" 2>"$ERR"
! grep -q 'Line 33 of "nade.graph" starts' "$OUT" && passes=$((passes + 1)) || fail "gdb knew the kernels unregistered"

# ---------------------------------------------------------------- bad values
ARJIT_JIT_DEBUG=gdb,lldb run 1 "${BENCH[@]}" && has "$ERR" "ARJIT_JIT_DEBUG: unknown 'lldb' in 'gdb,lldb' (a list of gdb, perf)"

echo "jit_debug: $passes passed, $fails failed"
((fails == 0))
