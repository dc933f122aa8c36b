#!/usr/bin/env bash
# `arjit data fetch` against a local HTTP server ($ARJIT_DATA_URL): a good
# file, one whose sha256 is wrong, a 404, a server that is down, usage
# errors; nothing but whole, verified files is ever left in --dir.
#
#   tests/test_cli_data.sh path/to/arjit     (ctest runs it as `cli_data`)
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" "${1:-}"
SHARED=$SRC/../shared/data

# a static server on a free port of 127.0.0.1, serving $TMP/srv
mkdir -p "$TMP/srv"
python3 - "$TMP/srv" "$TMP/port" <<'PY' &
import functools, http.server, os, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=sys.argv[1]))
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
server.serve_forever()
PY
SERVER=$!
trap 'kill $SERVER; rm -rf "$TMP"' EXIT
for ((i = 0; i < 100; i++)); do [[ -s $TMP/port ]] && break; sleep 0.1; done
export ARJIT_DATA_URL=http://127.0.0.1:$(cat "$TMP/port")
D=$TMP/data

# no stray temporaries: only the named files in $D
only() {
    local got
    got=$(cd "$D" 2>/dev/null && ls | tr '\n' ' ')
    [[ $got == "$*" ]] || fail "files in --dir: '$got', expected '$*'"
}

# ---------------------------------------------------------------- usage
run 2 data fetch cifar && has "$ERR" "unknown dataset 'cifar': expected mnist-bin, mnist, shakespeare, wine or all"
run 2 data get wine && has "$ERR" "unknown action 'get'"
run 2 data fetch && has "$ERR" "see 'arjit data --help'"
run 0 data --help && has "$OUT" "\$ARJIT_DATA_URL" && has "$OUT" "--dir DIR"

# ---------------------------------------------------------------- failures leave nothing
run 1 data fetch shakespeare --dir "$D" && has "$ERR" "$ARJIT_DATA_URL/tinyshakespeare.txt: error: download failed" &&
    has "$ERR" "404"
only ""
printf 'not the wine table\n' >"$TMP/srv/winequality-red.csv"
run 1 data fetch wine --dir "$D" &&
    has "$ERR" "$ARJIT_DATA_URL/winequality-red.csv: error: sha256 of the 19 bytes received is" &&
    has "$ERR" "expected 4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e: not the published file"
only ""
run 1 data fetch wine --dir /proc/no/such && has "$ERR" "/proc/no/such: error: cannot create it"

# ---------------------------------------------------------------- good files (the real ones, when here)
if [[ -f $SHARED/winequality-red.csv ]]; then
    cp "$SHARED/winequality-red.csv" "$TMP/srv/"
    printf 'a stale copy\n' >"$TMP/stale" && mkdir -p "$D" && cp "$TMP/stale" "$D/winequality-red.csv"
    # red is fetched over the stale copy; white is not served: the run fails there
    run 1 data fetch wine --dir "$D" && has "$ERR" "$D/winequality-red.csv: sha256 ok" && has "$ERR" "winequality-white.csv: error"
    cmp -s "$SHARED/winequality-red.csv" "$D/winequality-red.csv" || fail "winequality-red.csv differs from the served one"
    only "winequality-red.csv "
    cp "$SHARED/winequality-white.csv" "$TMP/srv/"
    run 0 data fetch wine --dir "$D" && has "$ERR" "$D/winequality-red.csv: have it (sha256 ok)" &&
        has "$ERR" "$D/winequality-white.csv: sha256 ok"
    only "winequality-red.csv winequality-white.csv "
    # what was fetched loads
    run 0 train "$SRC/models/fvsbn.graph" --data csv:"$D/winequality-red.csv",drop=quality --dims D=11 --batch 10 \
        --max-steps 2 --engine interp
fi

# ---------------------------------------------------------------- a server that is down
kill $SERVER && wait $SERVER 2>/dev/null
trap 'rm -rf "$TMP"' EXIT
run 1 data fetch shakespeare --dir "$D" && has "$ERR" "download failed" && has "$ERR" "onnect"

echo "cli_data: $passes passed, $fails failed"
((fails == 0))
