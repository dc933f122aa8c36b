# Shared by the CLI test scripts (sourced): a scratch dir, and `run`, `has`
# and `fail` to run arjit and check its exit code and output.
#   . tests/cli_lib.sh path/to/arjit
ARJIT=${1:?usage: SCRIPT path/to/arjit}
SRC=${ARJIT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/out ERR=$TMP/err
fails=0 passes=0

fail() {
    echo "FAIL: $*"
    echo "  stdout:"; sed 's/^/    /' "$OUT"
    echo "  stderr:"; sed 's/^/    /' "$ERR"
    fails=$((fails + 1))
}

# run CODE ARGS... [< input]: run arjit, expect exit CODE; output in $OUT/$ERR.
run() {
    local want=$1
    shift
    LAST="$*"
    "$ARJIT" "$@" >"$OUT" 2>"$ERR"
    local got=$?
    if ((got != want)); then
        fail "arjit $* exited $got, expected $want"
        return 1
    fi
    # sanitizers exit 1 too: a report must not pass for a model error (the
    # warning of an allocation refused under allocator_may_return_null is none)
    if grep -v 'AddressSanitizer failed to allocate' "$ERR" | grep -qE 'Sanitizer|runtime error:'; then
        fail "arjit $*: sanitizer report"
        return 1
    fi
    passes=$((passes + 1))
}

# has FILE TEXT: the file contains TEXT (fixed string).
has() {
    if ! grep -qF -- "$2" "$1"; then
        fail "expected '$2' in $(basename "$1") (after: arjit ${LAST:-})"
        return 1
    fi
}
