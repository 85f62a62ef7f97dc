#!/usr/bin/env bash
# scripts/bench.sh [scenario...] — Portico against nginx, HAProxy, a bare hyper forwarder and
# the origin reached directly, side by side on loopback in one run; writes docs/benchmarks.md.
#
# Scenarios (all when none is named), in the order they run:
#   scale    9: scalebench, the autoscaler's cold-start hand-off and a burst (own processes;
#               writes docs/benchmarks-scaling.md and docs/img/scaling-burst.svg)
#   async    7: asyncbench, durable async intake (own processes; docs/benchmarks-async.md)
#   ipfilter 8: criterion, security-group lookups at 100,000 rules (cargo bench -p ipfilter)
#   http     1: wrk -t1 -c32, small JSON POST answered 200: proxy CPU per request, requests/s
#   latency  2: latbench, 1 connection at fixed open-loop rates: added p50/p99/p99.9
#   sse      3: ssebench, 1,000 concurrent SSE streams: added per-event delay, first event
#   ws       5: wsbench echo: WebSocket messages/s and proxy CPU per message
#   h2       6: h2load over h2c prior knowledge: requests/s and proxy CPU per request
#   rss      4: connbench, 10,000 idle keep-alive connections and 2,000 WebSockets: RSS per
#               connection of each proxy (fresh proxies, run last)
#
# Method (docs/benchmarks.md, shared/PERFORMANCE.md): proxy CPU time from
# /proc/<pid>/task/*/schedstat (all threads and child processes) around each run; the proxy
# pinned on CPU 1, origin and load on CPU 0; paths interleaved in a rotating order; a run during
# which other processes used noticeable CPU (/proc/stat) is discarded and repeated (at most
# BENCH_MAX_RETRIES times); medians and ranges reported. Everything listens on 127.0.0.1
# only, on free ports, and is stopped on exit.
#
# Installs nginx, HAProxy, wrk and h2load (nghttp2-client) from Debian when missing, builds
# the release binaries, and writes docs/benchmarks.md (sections of scenarios not run this time
# are kept from the old file, and so is the hand-written "Optimisations" section) and the SVG
# plots in docs/img/.
#
# Environment (defaults keep the whole run under 20 minutes on 2 CPUs):
#   BENCH_REPS=5             repetitions per path (http)       BENCH_SECONDS=3 per measured run
#   BENCH_CONNS=32           wrk connections (http)            BENCH_WARMUP_SECONDS=1
#   BENCH_LAT_RATES="1000 3000"  open-loop rates (latency)     BENCH_LAT_REPS=5
#   BENCH_LAT_SECONDS=3      measured seconds per latency run
#   BENCH_SSE_REPS=5         repetitions per path (sse)        BENCH_SSE_STREAMS=1000
#   BENCH_SSE_EVENTS=50      events per stream                 BENCH_SSE_INTERVAL_MS=20
#   BENCH_RSS_HTTP_CONNS=10000  idle keep-alive connections    BENCH_RSS_WS_CONNS=2000
#   BENCH_RSS_STEP=1000      connections between RSS readings
#   BENCH_WS_REPS=5          repetitions per path (ws)         BENCH_WS_CONNS=32  BENCH_WS_SIZE=1024
#   BENCH_WS_SECONDS=2       measured seconds per ws run
#   BENCH_H2_REPS=5          repetitions per path (h2)         BENCH_H2_CONNS=8   BENCH_H2_STREAMS=8
#   BENCH_H2_SECONDS=2       measured seconds per h2 run
#   BENCH_SCALE_ROUNDS=6     cold starts (scale)               BENCH_SCALE_BURSTS=1
#   BENCH_SCALE_BURST_SECONDS=12
#   BENCH_ASYNC_REPS=1       repetitions per run (async)       BENCH_ASYNC_SECONDS=3
#   BENCH_ASYNC_PHASES=alone,paced,e2e                         BENCH_ASYNC_CLIENTS=64
#   BENCH_ASYNC_E2E_JOBS=100  BENCH_ASYNC_EXTRA_THREADS=0      BENCH_ASYNC_DRAIN_SECONDS=5
#   BENCH_IPF_SECONDS=3      criterion measurement time (ipfilter)
#   BENCH_NOISE_PCT=15       other load (% of one core) above which a run is discarded
#   BENCH_MAX_RETRIES=2      repeats of a discarded run before it is kept and flagged
#   BENCH_QUIET_WAIT=10      seconds to wait for the other load to drop before each run
#   BENCH_QUIET_BUDGET=120   seconds of such waiting in all, after which runs start at once
#   BENCH_PORTICO_THREADS=1  the first Portico's server.worker_threads (the second has 2)
#   BENCH_OUT=docs/benchmarks.md  BENCH_SCALE_OUT=docs/benchmarks-scaling.md
#   BENCH_ASYNC_OUT=docs/benchmarks-async.md  BENCH_IMG=docs/img
#   BENCH_NO_BUILD=1 (skip cargo build)   BENCH_KEEP=1 (keep the run directory)
#
# Layout: scripts/bench/lib.sh (processes, CPU and noise measures, the retry loop),
# scripts/bench/peers.sh (installing and starting origin and proxies),
# scripts/bench/scenarios.sh (one function per scenario), scripts/bench/report.py (the report).
# Extending: a path is a name with its BASE URL and PROXY_PID (start_proxy in peers.sh, config
# template in bench/peers/); a proxy scenario is a `NAME_once` function (scenarios.sh) run
# through `interleave`, a case below and a section in report.py.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T_START=$(date +%s)

ALL_SCENARIOS=(scale async ipfilter http latency sse ws h2 rss)
REPS=${BENCH_REPS:-5}
SECS=${BENCH_SECONDS:-3}
CONNS=${BENCH_CONNS:-32}
WARMUP=${BENCH_WARMUP_SECONDS:-1}
LAT_RATES=${BENCH_LAT_RATES:-1000 3000}
LAT_REPS=${BENCH_LAT_REPS:-5}
LAT_SECONDS=${BENCH_LAT_SECONDS:-3}
SSE_REPS=${BENCH_SSE_REPS:-5}
SSE_STREAMS=${BENCH_SSE_STREAMS:-1000}
SSE_EVENTS=${BENCH_SSE_EVENTS:-50}
SSE_INTERVAL_MS=${BENCH_SSE_INTERVAL_MS:-20}
RSS_HTTP_CONNS=${BENCH_RSS_HTTP_CONNS:-10000}
RSS_WS_CONNS=${BENCH_RSS_WS_CONNS:-2000}
RSS_STEP=${BENCH_RSS_STEP:-1000}
WS_REPS=${BENCH_WS_REPS:-5}
WS_SECONDS=${BENCH_WS_SECONDS:-2}
WS_CONNS=${BENCH_WS_CONNS:-32}
WS_SIZE=${BENCH_WS_SIZE:-1024}
H2_REPS=${BENCH_H2_REPS:-5}
H2_SECONDS=${BENCH_H2_SECONDS:-2}
H2_CONNS=${BENCH_H2_CONNS:-8}
H2_STREAMS=${BENCH_H2_STREAMS:-8}
SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-6}
SCALE_BURSTS=${BENCH_SCALE_BURSTS:-1}
SCALE_BURST_SECONDS=${BENCH_SCALE_BURST_SECONDS:-12}
ASYNC_REPS=${BENCH_ASYNC_REPS:-1}
ASYNC_SECONDS=${BENCH_ASYNC_SECONDS:-3}
ASYNC_PHASES=${BENCH_ASYNC_PHASES:-alone,paced,e2e}
ASYNC_CLIENTS=${BENCH_ASYNC_CLIENTS:-64}
ASYNC_E2E_JOBS=${BENCH_ASYNC_E2E_JOBS:-100}
ASYNC_EXTRA_THREADS=${BENCH_ASYNC_EXTRA_THREADS:-0}
ASYNC_DRAIN_SECONDS=${BENCH_ASYNC_DRAIN_SECONDS:-5}
IPF_SECONDS=${BENCH_IPF_SECONDS:-3}
NOISE_PCT=${BENCH_NOISE_PCT:-15}
MAX_RETRIES=${BENCH_MAX_RETRIES:-2}
QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-120}
PORTICO_THREADS=${BENCH_PORTICO_THREADS:-1}
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
IMG=${BENCH_IMG:-$(dirname "$OUT")/img}
SCALE_OUT=${BENCH_SCALE_OUT:-$ROOT/docs/benchmarks-scaling.md}
ASYNC_OUT=${BENCH_ASYNC_OUT:-$ROOT/docs/benchmarks-async.md}

# The request of scenarios 1, 2 and 6: a one-token chat completion, the smallest realistic
# inference call (a ~90-byte JSON body, a ~300-byte JSON answer). Every path reaches the same
# origin route; only the prefix differs.
POST_PATH=/v1/chat/completions
# shellcheck disable=SC2089,SC2090 # a JSON string, passed whole ("$POST_BODY") everywhere
POST_BODY='{"model":"fake-model","messages":[{"role":"user","content":"Say hi"}],"max_tokens":1}'
# Health checks of every path: no body to read, 15 bytes of JSON.
ORIGIN_PATH=/health
# Where Portico serves the origin (project `bench`, endpoint `origin`).
PORTICO_PREFIX=/project/bench/endpoint/origin

# The paths of each scenario (the second Portico and nginx doing Portico's per-request work
# only in scenario 1; the floor where it is the reference; RSS only for proxies).
HTTP_TARGETS=(direct portico portico2 nginx nginx_work haproxy floor)
LAT_TARGETS=(direct portico nginx haproxy floor)
SSE_TARGETS=(direct portico nginx haproxy)
WS_TARGETS=(direct portico nginx haproxy)
H2_TARGETS=(direct portico nginx haproxy)
RSS_TARGETS=(portico nginx haproxy)

# shellcheck source=scripts/bench/lib.sh
. "$ROOT/scripts/bench/lib.sh"
# shellcheck source=scripts/bench/peers.sh
. "$ROOT/scripts/bench/peers.sh"
# shellcheck source=scripts/bench/scenarios.sh
. "$ROOT/scripts/bench/scenarios.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------------------- arguments
SCENARIOS=()
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    *) [[ " ${ALL_SCENARIOS[*]} " == *" $arg "* ]] || die "unknown scenario '$arg' (known: ${ALL_SCENARIOS[*]})"
       SCENARIOS+=("$arg") ;;
  esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL_SCENARIOS[@]}")
# wants SCENARIO: whether it was asked for.
wants() { [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
# needs_peers: whether any scenario asked for compares proxies (origin, Portico, nginx, ...).
needs_peers() { wants http || wants latency || wants sse || wants ws || wants h2 || wants rss; }

# ---------------------------------------------------------------------------- tools
install_missing
NGINX=$(nginx_bin)
HAPROXY=$(haproxy_bin)
! needs_peers || [ -n "$NGINX" ] || die "nginx is still missing"
! needs_peers || [ -n "$HAPROXY" ] || die "HAProxy is still missing"

T_BUILD=$(date +%s)
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building release binaries (cargo build --release -p gateway -p bench)"
  cargo build --release -p gateway -p bench >&2
fi
BUILD_SECS=$(($(date +%s) - T_BUILD))
# The source the binaries were built from (read now: others may commit during the run).
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- gateway bench 2>/dev/null || echo '+changes')
[ "${BENCH_NO_BUILD:-0}" != 1 ] || GIT_REV="$GIT_REV (BENCH_NO_BUILD: binaries as found)"
RUSTC_VERSION=$(rustc -V 2>/dev/null || echo unknown)
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
  echo "$ROOT/target")
BIN=$TARGET_DIR/release
NEEDED_BINS=(portico fakeworker)
! needs_peers || NEEDED_BINS+=(refproxy)
! wants latency || NEEDED_BINS+=(latbench)
! wants sse || NEEDED_BINS+=(ssebench)
! wants ws || NEEDED_BINS+=(wsbench)
! wants rss || NEEDED_BINS+=(connbench)
! wants scale || NEEDED_BINS+=(scalebench)
! wants async || NEEDED_BINS+=(asyncbench)
for b in "${NEEDED_BINS[@]}"; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build failed?)"
done

# Pinning: the proxy alone on CPU 1; origin and load generator on CPU 0.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_PROXY=(taskset -c 1)
  PIN_LOAD=(taskset -c 0)
  PINNING="proxy on CPU 1; origin and load generators on CPU 0 (taskset); the second Portico (2 worker threads) unpinned"
else
  PIN_PROXY=()
  PIN_LOAD=()
  PINNING="none (taskset missing or fewer than 2 CPUs)"
fi

# 10,000 connections through a proxy need about 20,000 descriptors in the proxy (Portico
# inherits this limit; nginx and HAProxy set theirs in their configs).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RUN_DIR=$(mktemp -d /tmp/portico-bench.XXXXXX)
chmod 755 "$RUN_DIR" # nginx workers run as an unprivileged user and need its temp paths
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
RESULTS=$RUN_DIR/results.jsonl
TIMINGS=$RUN_DIR/timings
: >"$RESULTS"
echo "build $BUILD_SECS" >"$TIMINGS"
log "run directory: $RUN_DIR"
START_TIME=$(date -u '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------------------- scenarios
# The self-contained ones first, before the peers start, so nothing else of ours runs.
! wants scale || timed scale scale_scenario
! wants async || timed async async_scenario
! wants ipfilter || timed ipfilter ipfilter_scenario

if needs_peers; then
  T_PEERS=$(date +%s)
  start_peers
  write_post_lua
  echo "peers $(($(date +%s) - T_PEERS))" >>"$TIMINGS"
  # shellcheck disable=SC2086 # LAT_RATES is a list
  {
    ! wants http || timed http interleave http "$REPS" "${HTTP_TARGETS[@]}"
    ! wants latency || timed latency interleave latency "$LAT_REPS" "${LAT_TARGETS[@]}" -- $LAT_RATES
    ! wants sse || timed sse interleave sse "$SSE_REPS" "${SSE_TARGETS[@]}"
    ! wants ws || timed ws interleave ws "$WS_REPS" "${WS_TARGETS[@]}"
    ! wants h2 || timed h2 interleave h2 "$H2_REPS" "${H2_TARGETS[@]}"
    # Last: it starts fresh proxies, and leaves the machine with 10,000 sockets to close.
    ! wants rss || timed rss rss_all
  }
fi

# ---------------------------------------------------------------------------- report
T_REPORT=$(date +%s)
export RESULTS TIMINGS OUT IMG RUN_DIR BIN START_TIME PINNING GIT_REV RUSTC_VERSION
export REPS SECS CONNS WARMUP LAT_RATES LAT_REPS LAT_SECONDS SSE_REPS SSE_STREAMS SSE_EVENTS SSE_INTERVAL_MS
export RSS_HTTP_CONNS RSS_WS_CONNS RSS_STEP WS_REPS WS_SECONDS WS_CONNS WS_SIZE H2_REPS H2_SECONDS H2_CONNS H2_STREAMS
export SCALE_ROUNDS SCALE_BURSTS SCALE_BURST_SECONDS ASYNC_REPS ASYNC_SECONDS ASYNC_PHASES ASYNC_CLIENTS
export ASYNC_E2E_JOBS ASYNC_EXTRA_THREADS IPF_SECONDS NOISE_PCT MAX_RETRIES QUIET_WAIT QUIET_BUDGET
# shellcheck disable=SC2090
export PORTICO_THREADS POST_PATH POST_BODY ORIGIN_PATH PORTICO_PREFIX ORIGIN_RESTARTS
export PORTICO_STATUS=${PORTICO_STATUS:-} PORTICO_NOTE=${PORTICO_NOTE:-}
export SCENARIOS_RUN="${SCENARIOS[*]}"
export SCALE_OUT ASYNC_OUT T_START
MACHINE_CPUS=$(nproc)
MACHINE_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MACHINE_KERNEL=$(uname -r)
MACHINE_OS=$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || echo unknown)
MACHINE_MEM=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
export MACHINE_CPUS MACHINE_MODEL MACHINE_KERNEL MACHINE_OS MACHINE_MEM
NGINX_VERSION=$( ([ -n "$NGINX" ] && "$NGINX" -v 2>&1) | sed 's|^nginx version: ||' || true)
HAPROXY_VERSION=$( ([ -n "$HAPROXY" ] && "$HAPROXY" -v 2>&1) | head -n1 | awk '{print "HAProxy " $3}' || true)
WRK_VERSION=$( (wrk -v 2>&1 || true) | head -n1 | awk '{print $1, $2}')
H2LOAD_VERSION=$( (h2load --version 2>&1 || true) | head -n1)
export NGINX_VERSION HAPROXY_VERSION WRK_VERSION H2LOAD_VERSION
T_END_SCENARIOS=$(date +%s)
mkdir -p "$(dirname "$OUT")" "$IMG"
python3 "$ROOT/scripts/bench/report.py" || die "the report failed"
echo "report $(($(date +%s) - T_REPORT))" >>"$TIMINGS"
log "wrote $OUT"
log "wall time per step (s):"
while read -r name secs; do log "  $name: $secs"; done <"$TIMINGS"
log "  total: $(($(date +%s) - T_START)) (scenarios done after $((T_END_SCENARIOS - T_START)))"
