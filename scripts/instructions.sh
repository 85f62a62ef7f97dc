#!/usr/bin/env bash
# scripts/instructions.sh — user-space instructions per proxied request, under callgrind.
#
# Timings on this shared 2-core machine move ±15% between runs; instruction counts do not
# (they repeat to within ~1%), so they are the measure for optimizing the request path. Runs
# fakeworker as the origin, then the hyper floor (refproxy) and Portico (the benchmark
# config, one data thread), each under `valgrind --tool=callgrind`: a 3 s wrk warm-up, then
# counters zeroed, a 10 s wrk -c8 run, counters dumped; instructions of every thread divided
# by the requests wrk completed. Kernel work is not counted: syscalls per request are the
# same for both (2 reads, 2 writes).
#
# Needs valgrind (Debian `valgrind`) and wrk; builds the release binaries unless
# INSTR_NO_BUILD=1. INSTR_KEEP=1 keeps the run directory with the callgrind dumps
# (`callgrind_annotate --inclusive=yes <dump>` shows where the instructions go).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { printf '[instructions] %s\n' "$*" >&2; }
for tool in valgrind callgrind_control wrk; do
  command -v "$tool" >/dev/null || { log "missing $tool: apt-get install -y valgrind wrk"; exit 2; }
done
[ "${INSTR_NO_BUILD:-0}" = 1 ] || cargo build --release -p gateway -p bench >&2
BIN=$ROOT/target/release
RUN_DIR=$(mktemp -d /tmp/portico-instructions.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${INSTR_KEEP:-0}" = 1 ] && log "run directory kept: $RUN_DIR" || rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# wait_listening FILE: the first `listening on [name] addr` address printed into FILE.
wait_listening() {
  local i
  for i in $(seq 300); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then
      grep -m1 '^listening on ' "$1" | awk '{print $NF}'
      return 0
    fi
    sleep 0.1
  done
  log "no 'listening on' line in $1"; return 1
}

RUST_LOG=warn "$BIN/fakeworker" --port 0 >"$RUN_DIR/origin.out" 2>&1 &
PIDS+=($!)
ORIGIN=$(wait_listening "$RUN_DIR/origin.out")
ORIGIN_PORT=${ORIGIN##*:}
sed -e "s|@DIR@|$RUN_DIR|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" -e "s|@WORKER_THREADS@|1|g" \
  bench/configs/portico.toml.template >"$RUN_DIR/portico.toml"

# measure NAME PATH COMMAND...: prints NAME's instructions per request.
measure() {
  local name=$1 path=$2 vpid addr requests total
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$RUN_DIR/$name.%p" "$@" \
    >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
  vpid=$!
  PIDS+=("$vpid")
  addr=$(wait_listening "$RUN_DIR/$name.out")
  # Under callgrind the first requests also pay for translating code: warm up first.
  wrk -t1 -c8 -d3s "http://$addr$path" >/dev/null
  callgrind_control -z "$vpid" >/dev/null 2>&1
  requests=$(wrk -t1 -c8 -d10s "http://$addr$path" | awk '/requests in/ {print $1}')
  callgrind_control -d "$vpid" >/dev/null 2>&1
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$RUN_DIR/$name".*.1)
  kill "$vpid"
  printf '%-8s %7d instructions/request  (%d requests)\n' "$name" $((total / requests)) "$requests"
}

measure floor /health "$BIN/refproxy" --upstream "$ORIGIN"
measure portico /project/bench/endpoint/origin/health "$BIN/portico" run --config "$RUN_DIR/portico.toml"
