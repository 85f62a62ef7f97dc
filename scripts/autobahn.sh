#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for Portico's WebSocket relay (docs/websocket-conformance.md).
#
# Runs `wstest -m fuzzingclient` twice against fakeworker's `GET /ws` echo: once directly and
# once through a Portico endpoint, then compares the per-case verdicts of the two reports and
# exits non-zero if any case's `behavior` or `behaviorClose` differs.
#
#   scripts/autobahn.sh                        full suite (all cases, both runs)
#   AUTOBAHN_CASES='1.*,2.*,5.*' scripts/autobahn.sh   only these cases (comma-separated)
#   AUTOBAHN_EXCLUDE='9.*' scripts/autobahn.sh         leave these out
#   scripts/autobahn.sh --write-doc            also rewrite the results block of
#                                              docs/websocket-conformance.md
#   AUTOBAHN_VENV=DIR                          use that virtualenv (made there if missing)
#   AUTOBAHN_PYTHON2=PATH                      the Python 2.7 to make the virtualenv with
#
# Everything it makes is under target/autobahn/: the Python 2.7 virtualenv with
# autobahntestsuite (made once), the generated config and specs, the process logs, and the
# reports in reports/direct and reports/portico (index.html to browse, index.json to compare).
#
# Exit status: 0 verdicts match, 1 they differ (or a run failed), 2 bad arguments, 77 no
# Python 2.7 found (skipped; set AUTOBAHN_PYTHON2 to an interpreter to use).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WRITE_DOC=0
for arg in "$@"; do
    case "$arg" in
        --write-doc) WRITE_DOC=1 ;;
        -h | --help)
            awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
            exit 0
            ;;
        *)
            echo "autobahn.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

OUT="$ROOT/target/autobahn"
VENV="${AUTOBAHN_VENV:-$OUT/venv}"
AUTOBAHN_VERSION="${AUTOBAHN_VERSION:-25.10.1}"
CASES="${AUTOBAHN_CASES:-*}"
EXCLUDE="${AUTOBAHN_EXCLUDE:-}"
# Autobahn's 9.x cases send messages of up to 16 MiB (and 16 MiB single frames): Portico's
# limits must be above that, or it would (rightly) close those sessions with 1009.
WS_LIMIT=$((32 * 1024 * 1024))

export PIP_NO_PYTHON_VERSION_WARNING=1

log() { printf '==> %s\n' "$*" >&2; }

# --- processes started here, stopped on any exit ----------------------------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_listening LOG NAME: prints ADDR of the first `listening on [NAME] ADDR` line of LOG
# (NAME empty: the unnamed form fakeworker prints), waiting up to 20 s.
wait_listening() {
    local file="$1" name="$2" pid="$3" addr="" i
    for i in $(seq 1 200); do
        if [ -n "$name" ]; then
            addr="$(awk -v n="$name" '$1 == "listening" && $2 == "on" && $3 == n && NF == 4 { print $4; exit }' "$file")"
        else
            addr="$(awk '$1 == "listening" && $2 == "on" && NF == 3 { print $3; exit }' "$file")"
        fi
        if [ -n "$addr" ]; then
            echo "$addr"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "autobahn.sh: no 'listening on $name' line in $file" >&2
    tail -n 20 "$file" "${file%.out}.err" >&2 || true
    return 1
}

# --- Python 2.7 and autobahntestsuite ----------------------------------------------------------
find_python2() {
    local candidate
    for candidate in "${AUTOBAHN_PYTHON2:-}" python2.7 python2 \
        "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/2.7*/bin/python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

setup_venv() {
    if [ -x "$VENV/bin/wstest" ] &&
        "$VENV/bin/wstest" -a 2>/dev/null | grep -qx "AutobahnTestSuite $AUTOBAHN_VERSION"; then
        return 0
    fi
    local python2
    if ! python2="$(find_python2)"; then
        echo "autobahn.sh: SKIPPED: no Python 2.7 interpreter (autobahntestsuite needs one)." >&2
        echo "  Install one (e.g. \`pyenv install 2.7.18\`) or set AUTOBAHN_PYTHON2." >&2
        exit 77
    fi
    if [ -n "${AUTOBAHN_VENV:-}" ] && [ -e "$VENV" ]; then
        echo "autobahn.sh: AUTOBAHN_VENV=$VENV has no wstest of autobahntestsuite $AUTOBAHN_VERSION" >&2
        exit 1
    fi
    log "creating $VENV with $python2 and autobahntestsuite==$AUTOBAHN_VERSION"
    rm -rf "$VENV" "$OUT/virtualenv"
    # virtualenv 20.21 is the last release that runs on Python 2.7; it goes into a private
    # directory so the interpreter's own site-packages stays untouched.
    "$python2" -m pip install --quiet --disable-pip-version-check \
        --target "$OUT/virtualenv" 'virtualenv<20.22'
    PYTHONPATH="$OUT/virtualenv" "$python2" -m virtualenv --quiet "$VENV"
    # 25.10.1 pins its whole dependency set (Twisted 19.10, autobahn 0.10.9, ...) for 2.7.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "autobahntestsuite==$AUTOBAHN_VERSION"
}

# --- spec files --------------------------------------------------------------------------------
# write_spec FILE AGENT URL OUTDIR
write_spec() {
    "$VENV/bin/python" - "$@" "$CASES" "$EXCLUDE" <<'EOF'
import json, sys
path, agent, url, outdir, cases, exclude = sys.argv[1:7]
split = lambda s: [c.strip() for c in s.split(",") if c.strip()]
spec = {
    "outdir": outdir,
    "servers": [{"agent": agent, "url": url}],
    "cases": split(cases) or ["*"],
    "exclude-cases": split(exclude),
    "exclude-agent-cases": {},
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
EOF
}

# run_wstest NAME URL: one fuzzingclient run; sets SECONDS_TAKEN to its duration.
run_wstest() {
    local name="$1" url="$2" start end
    local outdir="$OUT/reports/$name"
    rm -rf "$outdir"
    mkdir -p "$outdir"
    write_spec "$OUT/spec-$name.json" "$name" "$url" "$outdir"
    log "wstest fuzzingclient $name: $url (log: $OUT/wstest-$name.log)"
    start=$(date +%s)
    "$VENV/bin/wstest" -m fuzzingclient -s "$OUT/spec-$name.json" >"$OUT/wstest-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    if ! wait "$pid"; then
        echo "autobahn.sh: wstest ($name) failed; last lines of its log:" >&2
        tail -n 30 "$OUT/wstest-$name.log" >&2
        exit 1
    fi
    end=$(date +%s)
    SECONDS_TAKEN=$((end - start))
    if [ ! -s "$outdir/index.json" ]; then
        echo "autobahn.sh: wstest ($name) wrote no $outdir/index.json" >&2
        tail -n 30 "$OUT/wstest-$name.log" >&2
        exit 1
    fi
}

# --- main --------------------------------------------------------------------------------------
mkdir -p "$OUT"

log "building portico and fakeworker (release)"
# Only the two binaries used, so that work in progress on another binary does not stop this.
cargo build --release -p gateway -p bench --bin portico --bin fakeworker

setup_venv

log "starting fakeworker"
RUST_LOG="${RUST_LOG:-warn}" target/release/fakeworker --host 127.0.0.1 --port 0 \
    >"$OUT/fakeworker.out" 2>"$OUT/fakeworker.err" &
WORKER_PID=$!
PIDS+=("$WORKER_PID")
WORKER="$(wait_listening "$OUT/fakeworker.out" "" "$WORKER_PID")"

cat >"$OUT/portico.toml" <<EOF
# Written by scripts/autobahn.sh: one public endpoint on the fakeworker at $WORKER.
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 1

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "autobahn"

[[endpoint]]
id = "echo"
project = "autobahn"
public = true

[endpoint.workers]
kind = "static"
urls = ["http://$WORKER"]

[endpoint.websocket]
max_message_bytes = $WS_LIMIT
max_frame_bytes = $WS_LIMIT
EOF

log "starting portico"
RUST_LOG="${RUST_LOG:-warn}" target/release/portico run --config "$OUT/portico.toml" \
    >"$OUT/portico.out" 2>"$OUT/portico.err" &
PORTICO_PID=$!
PIDS+=("$PORTICO_PID")
PORTICO="$(wait_listening "$OUT/portico.out" public "$PORTICO_PID")"
wait_listening "$OUT/portico.out" admin "$PORTICO_PID" >/dev/null

DIRECT_URL="ws://$WORKER/ws"
PORTICO_URL="ws://$PORTICO/project/autobahn/endpoint/echo/ws"

run_wstest direct "$DIRECT_URL"
DIRECT_SECONDS=$SECONDS_TAKEN
run_wstest portico "$PORTICO_URL"
PORTICO_SECONDS=$SECONDS_TAKEN
log "direct run: ${DIRECT_SECONDS}s, through Portico: ${PORTICO_SECONDS}s"
for pid in "$WORKER_PID" "$PORTICO_PID"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "autobahn.sh: fakeworker or portico (pid $pid) died during the runs; see $OUT/*.err" >&2
        exit 1
    fi
done

TUNGSTENITE="$(awk '/^name = "tungstenite"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
VERSIONS="$("$VENV/bin/wstest" -a 2>/dev/null | tr '\n' ',' | sed 's/,$//; s/,/, /g'), $("$VENV/bin/python" --version 2>&1)"

compare_args=(
    --direct "$OUT/reports/direct/index.json"
    --portico "$OUT/reports/portico/index.json"
    --summary "$OUT/summary.md"
    --versions "$VERSIONS; tungstenite $TUNGSTENITE (Portico and fakeworker); portico $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    --cases "$CASES"
    --exclude "$EXCLUDE"
    --durations "$DIRECT_SECONDS" "$PORTICO_SECONDS"
)
if [ "$WRITE_DOC" = 1 ]; then
    compare_args+=(--doc "$ROOT/docs/websocket-conformance.md")
fi
"$VENV/bin/python" "$ROOT/scripts/autobahn_compare.py" "${compare_args[@]}"
