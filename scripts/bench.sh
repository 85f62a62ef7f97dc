#!/usr/bin/env bash
# scripts/bench.sh [scenario...] — Portico against nginx and the bare origin, on loopback.
#
# Scenarios (all when none is named):
#   http  wrk -t1 -c32 GET of a small JSON answer: requests/s, p50/p99, proxy CPU per request
#   sse   ssebench: N concurrent SSE streams, per-event delay added by each proxy
#   scale scalebench: Portico's autoscaler with fakeworker process workers (cold-start
#         hand-off and wake time, reaction to a burst, a plot); writes
#         docs/benchmarks-scaling.md and docs/img/scaling-burst.svg. Needs neither nginx
#         nor wrk, and starts its own Portico (twice); run alone it starts nothing else.
#   async asyncbench: async jobs (issue 7): durable intake rate and latency with nobody
#         consuming, then while a fakeworker drains the queue, and the end-to-end cost of
#         one job against a direct call; embedded queue and Redis (appendfsync always and
#         everysec). Writes docs/benchmarks-async.md. Self-contained like `scale`: starts
#         its own Portico, fakeworker and redis-server for every run (about 8 minutes).
#
# Method (shared/PERFORMANCE.md, docs/benchmarks.md): proxy CPU time from
# /proc/<pid>/task/*/schedstat (all threads and child processes) around each run; paths
# interleaved in a rotating order; a run during which other processes on the machine used
# noticeable CPU (from /proc/stat) is discarded and repeated (at most BENCH_MAX_RETRIES times);
# medians and ranges reported. Everything listens on 127.0.0.1 only and is stopped on exit.
#
# Installs nginx and wrk from Debian when missing, builds the release binaries, and writes
# docs/benchmarks.md (sections of scenarios not run this time are kept from the old file).
#
# Environment:
#   BENCH_REPS=5              repetitions per path (http)       BENCH_SECONDS=5  per http run
#   BENCH_CONNS=32            wrk connections                   BENCH_WARMUP_SECONDS=1
#   BENCH_SSE_REPS=5          repetitions per path (sse)        BENCH_SSE_STREAMS=100
#   BENCH_SSE_EVENTS=50       events per stream                 BENCH_SSE_INTERVAL_MS=20
#   BENCH_NOISE_PCT=15        other load (% of one core) above which a run is discarded
#   BENCH_MAX_RETRIES=2       repeats of a discarded run before it is kept and flagged
#   BENCH_QUIET_WAIT=10       seconds to wait for the other load to drop before each run
#   BENCH_QUIET_BUDGET=120    seconds of such waiting in all, after which runs start at once
#   BENCH_PORTICO_THREADS=1   Portico server.worker_threads
#   BENCH_SCALE_ROUNDS=12     cold starts (scale)               BENCH_SCALE_BURSTS=3
#   BENCH_SCALE_OUT=docs/benchmarks-scaling.md (the plot goes to img/scaling-burst.svg beside it)
#   BENCH_ASYNC_REPS=3        repetitions per run (async)       BENCH_ASYNC_SECONDS=5 measured
#   BENCH_ASYNC_CLIENTS=64    concurrent intake connections     BENCH_ASYNC_E2E_JOBS=200
#   BENCH_ASYNC_EXTRA_THREADS=2  also intake alone with this many data-plane threads (0: not)
#   BENCH_ASYNC_OUT=docs/benchmarks-async.md
#   BENCH_OUT=docs/benchmarks.md   BENCH_NO_BUILD=1 (skip cargo build)   BENCH_KEEP=1 (keep the run dir)
#
# Extending (issue 9): a path is a name in TARGETS with its BASE URL and PROXY_PID (start it
# beside nginx, config template in bench/peers/); a scenario is a SCENARIO_run function
# measuring one path once and appending one JSON line per try to $RESULTS, a case in the
# argument parser, an `interleave` call and a section function in the report. A scenario
# that brings its own processes and report (like `scale`) is a block run before the
# peers start; `needs_peers` says whether any scenario asked for needs them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ALL_SCENARIOS=(http sse scale async)
REPS=${BENCH_REPS:-5}
SECS=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-32}
WARMUP=${BENCH_WARMUP_SECONDS:-1}
SSE_REPS=${BENCH_SSE_REPS:-$REPS}
SSE_STREAMS=${BENCH_SSE_STREAMS:-100}
SSE_EVENTS=${BENCH_SSE_EVENTS:-50}
SSE_INTERVAL_MS=${BENCH_SSE_INTERVAL_MS:-20}
NOISE_PCT=${BENCH_NOISE_PCT:-15}
MAX_RETRIES=${BENCH_MAX_RETRIES:-2}
PORTICO_THREADS=${BENCH_PORTICO_THREADS:-1}
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-12}
SCALE_BURSTS=${BENCH_SCALE_BURSTS:-3}
SCALE_OUT=${BENCH_SCALE_OUT:-$ROOT/docs/benchmarks-scaling.md}
ASYNC_REPS=${BENCH_ASYNC_REPS:-3}
ASYNC_SECONDS=${BENCH_ASYNC_SECONDS:-5}
ASYNC_CLIENTS=${BENCH_ASYNC_CLIENTS:-64}
ASYNC_E2E_JOBS=${BENCH_ASYNC_E2E_JOBS:-200}
ASYNC_EXTRA_THREADS=${BENCH_ASYNC_EXTRA_THREADS:-2}
ASYNC_OUT=${BENCH_ASYNC_OUT:-$ROOT/docs/benchmarks-async.md}
# The origin's cheapest answer: no body to read, no query to parse, 15 bytes of JSON.
ORIGIN_PATH=/health
# Where Portico serves the origin (project `bench`, endpoint `origin`).
PORTICO_PREFIX=/project/bench/endpoint/origin

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# ---------------------------------------------------------------------------- arguments
SCENARIOS=()
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    http|sse|scale|async) SCENARIOS+=("$arg") ;;
    *) die "unknown scenario '$arg' (known: ${ALL_SCENARIOS[*]})" ;;
  esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL_SCENARIOS[@]}")
wants() { local s; for s in "${SCENARIOS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
# The origin, nginx, Portico and the floor: only the proxy comparisons use them.
needs_peers() { wants http || wants sse; }

# ---------------------------------------------------------------------------- tools
nginx_bin() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

install_missing() {
  local missing=()
  if needs_peers; then
    [ -n "$(nginx_bin)" ] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
  fi
  # asyncbench leaves the Redis rows out without it, but they are half the point.
  if wants async; then
    command -v redis-server >/dev/null || missing+=(redis-server)
  fi
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl >/dev/null || missing+=(curl)
  command -v pgrep >/dev/null || missing+=(procps)
  [ ${#missing[@]} -gt 0 ] || return 0
  log "installing from Debian: ${missing[*]}"
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq >&2
  local pkgs=() m
  for m in "${missing[@]}"; do
    if [ "$m" = nginx ]; then
      # nginx-light: the small build (bookworm); newer Debian only has `nginx`.
      if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
    else
      pkgs+=("$m")
    fi
  done
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
  # The package's own nginx (started by its post-install script, on port 80) is not ours
  # and not wanted during a benchmark.
  if [[ " ${pkgs[*]} " == *" nginx"* ]] && command -v service >/dev/null; then
    "${sudo[@]}" service nginx stop >/dev/null 2>&1 || true
  fi
  # The same for the package's own Redis (port 6379): asyncbench starts its own.
  if [[ " ${pkgs[*]} " == *" redis-server "* ]] && command -v service >/dev/null; then
    "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
  fi
}

install_missing
NGINX=$(nginx_bin)
[ -n "$NGINX" ] || ! needs_peers || die "nginx is still missing"

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building release binaries (cargo build --release -p gateway -p bench)"
  cargo build --release -p gateway -p bench >&2
fi
# The source the binaries were built from (read now: others may commit during the run).
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- gateway bench 2>/dev/null || echo '+changes')
[ "${BENCH_NO_BUILD:-0}" != 1 ] || GIT_REV="$GIT_REV (BENCH_NO_BUILD: binaries as found)"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
  echo "$ROOT/target")
BIN=$TARGET_DIR/release
NEEDED_BINS=(portico fakeworker)
! needs_peers || NEEDED_BINS+=(ssebench refproxy)
! wants scale || NEEDED_BINS+=(scalebench)
! wants async || NEEDED_BINS+=(asyncbench)
for b in "${NEEDED_BINS[@]}"; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build failed?)"
done

# Pinning: the proxy alone on CPU 1; origin and load generator on CPU 0.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_PROXY=(taskset -c 1)
  PIN_LOAD=(taskset -c 0)
  PINNING="proxy on CPU 1; origin, wrk and ssebench on CPU 0 (taskset)"
else
  PIN_PROXY=()
  PIN_LOAD=()
  PINNING="none (taskset missing or fewer than 2 CPUs)"
fi

# Many concurrent streams need many descriptors (ssebench, the proxies, the origin).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------- processes
RUN_DIR=$(mktemp -d /tmp/portico-bench.XXXXXX)
chmod 755 "$RUN_DIR" # nginx workers run as an unprivileged user and need its temp paths
PIDS=()
LOAD_PID=""

cleanup() {
  local status=$? pid i
  trap - EXIT INT TERM
  [ "$status" = 0 ] || log "stopping everything (exit status $status)"
  [ -z "$LOAD_PID" ] || kill -TERM "$LOAD_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 30); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "run directory kept: $RUN_DIR"; else rm -rf "$RUN_DIR"; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME PIN... -- COMMAND...: runs COMMAND in the background, output in $RUN_DIR/NAME.*
start() {
  local name=$1; shift
  local pin=()
  while [ "$1" != -- ]; do pin+=("$1"); shift; done
  shift
  "${pin[@]}" "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# run_load COMMAND...: runs a load generator (wrk, ssebench) and waits for it. It runs in the
# background so that Ctrl-C interrupts the `wait` and the INT trap runs at once (bash would
# otherwise skip the trap when wrk catches SIGINT and exits normally); cleanup stops it.
run_load() {
  "$@" &
  LOAD_PID=$!
  local status=0
  wait "$LOAD_PID" || status=$?
  LOAD_PID=""
  return $status
}

# wait_line PID FILE REGEX: the first line of FILE matching REGEX, once written.
wait_line() {
  local pid=$1 file=$2 re=$3 i line
  for i in $(seq 300); do
    line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
    [ -n "$line" ] && { echo "$line"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "${file%.out}.err" >&2 || true; return 1; }
    sleep 0.1
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || echo 000; }

fill_template() { # fill_template TEMPLATE OUTPUT: replaces the @NAME@ placeholders
  sed -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
    -e "s|@NGINX_PORT@|${NGINX_PORT:-}|g" -e "s|@WORKER_THREADS@|$PORTICO_THREADS|g" "$1" >"$2"
}

log "run directory: $RUN_DIR"

# ---------------------------------------------------------------------------- scale
# Before the peers start, so that nothing else of ours runs meanwhile. scalebench starts and
# stops its own Portico and workers (SIGTERM or Ctrl-C make it stop them too), and writes
# its report and plot itself; the JSON summary it prints is kept in the run directory.
if wants scale; then
  log "scenario scale: $SCALE_ROUNDS cold starts, $SCALE_BURSTS bursts (about 2.5 minutes)"
  run_load "$BIN/scalebench" --portico "$BIN/portico" --fakeworker "$BIN/fakeworker" \
    --rounds "$SCALE_ROUNDS" --bursts "$SCALE_BURSTS" --run-dir "$RUN_DIR/scale" \
    --out "$SCALE_OUT" --svg "$(dirname "$SCALE_OUT")/img/scaling-burst.svg" \
    --source "$GIT_REV" --toolchain "$(rustc -V 2>/dev/null || echo unknown)" \
    >"$RUN_DIR/scale.json" || die "scalebench failed (its log is above)"
  log "scale: $(cat "$RUN_DIR/scale.json")"
  log "wrote $SCALE_OUT"
fi

# ---------------------------------------------------------------------------- async
# Also before the peers. asyncbench starts and stops its own Portico, fakeworker and
# redis-server for every run (SIGTERM or Ctrl-C make it stop them too) and writes its report
# itself; the JSON summary it prints is kept in the run directory.
if wants async; then
  log "scenario async: $ASYNC_REPS repetitions of intake alone, draining and end to end (about 8 minutes)"
  ASYNC_KEEP=()
  [ "${BENCH_KEEP:-0}" != 1 ] || ASYNC_KEEP=(--keep)
  run_load "$BIN/asyncbench" --portico "$BIN/portico" --fakeworker "$BIN/fakeworker" \
    --reps "$ASYNC_REPS" --seconds "$ASYNC_SECONDS" --clients "$ASYNC_CLIENTS" \
    --e2e-jobs "$ASYNC_E2E_JOBS" --threads "$PORTICO_THREADS" \
    --extra-threads "$ASYNC_EXTRA_THREADS" --noise-pct "$NOISE_PCT" \
    --quiet-wait-seconds "${BENCH_QUIET_WAIT:-10}" --run-dir "$RUN_DIR/async" "${ASYNC_KEEP[@]}" \
    --out "$ASYNC_OUT" --source "$GIT_REV" --toolchain "$(rustc -V 2>/dev/null || echo unknown)" \
    >"$RUN_DIR/async.json" || die "asyncbench failed (its log is above)"
  log "async: $(cat "$RUN_DIR/async.json")"
  log "wrote $ASYNC_OUT"
fi
if ! needs_peers; then
  exit 0
fi

# The origin. Its access log is off (RUST_LOG=warn) and it records no requests. Restarted on
# the same port if it dies (this machine is shared; a stray `pkill fakeworker` has been seen).
ORIGIN_STARTS=0
start_origin() { # start_origin PORT
  ORIGIN_STARTS=$((ORIGIN_STARTS + 1))
  local name=origin-$ORIGIN_STARTS line
  start "$name" "${PIN_LOAD[@]}" -- env RUST_LOG=warn "$BIN/fakeworker" --port "$1" --record-limit 0
  ORIGIN_PID=$LAST_PID
  line=$(wait_line "$ORIGIN_PID" "$RUN_DIR/$name.out" '^listening on ') || die "fakeworker did not start"
  ORIGIN_PORT=${line##*:}
  ORIGIN=http://127.0.0.1:$ORIGIN_PORT
  [ "$(http_code "$ORIGIN$ORIGIN_PATH")" = 200 ] || die "the origin does not answer 200 on $ORIGIN_PATH"
  log "origin: fakeworker pid $ORIGIN_PID on $ORIGIN"
}
start_origin 0

# Portico.
fill_template bench/configs/portico.toml.template "$RUN_DIR/portico.toml"
"$BIN/portico" validate --config "$RUN_DIR/portico.toml" >&2 || die "the generated Portico config is invalid"
start portico "${PIN_PROXY[@]}" -- "$BIN/portico" run --config "$RUN_DIR/portico.toml"
PORTICO_PID=$LAST_PID
wait_line "$PORTICO_PID" "$RUN_DIR/portico.out" '^listening on admin ' >/dev/null || die "Portico did not start"
line=$(grep -m1 '^listening on bench ' "$RUN_DIR/portico.out") || die "no 'listening on bench' line from Portico"
PORTICO=http://${line#listening on bench }
log "portico: pid $PORTICO_PID on $PORTICO"

# nginx.
NGINX_PORT=$(free_port)
mkdir -p "$RUN_DIR/nginx"
fill_template bench/peers/nginx.conf.template "$RUN_DIR/nginx.conf"
"$NGINX" -t -q -p "$RUN_DIR/nginx" -e "$RUN_DIR/nginx/error.log" -c "$RUN_DIR/nginx.conf" ||
  die "the generated nginx config is invalid"
start nginx "${PIN_PROXY[@]}" -- "$NGINX" -p "$RUN_DIR/nginx" -e "$RUN_DIR/nginx/error.log" \
  -c "$RUN_DIR/nginx.conf" -g 'daemon off;'
NGINX_PID=$LAST_PID
NGINX_URL=http://127.0.0.1:$NGINX_PORT
for _ in $(seq 100); do [ "$(http_code "$NGINX_URL$ORIGIN_PATH")" = 200 ] && break; sleep 0.1; done
[ "$(http_code "$NGINX_URL$ORIGIN_PATH")" = 200 ] || die "nginx does not proxy (see $RUN_DIR/nginx/error.log)"
log "nginx: pid $NGINX_PID on $NGINX_URL"

# The hyper floor: refproxy (bench/src/bin/refproxy.rs), the per-core hyper design of
# shared/PERFORMANCE.md with nothing else. Portico's distance to it is what Portico's own
# stages cost; its distance to nginx is what hyper itself costs.
start floor "${PIN_PROXY[@]}" -- "$BIN/refproxy" --upstream "127.0.0.1:$ORIGIN_PORT"
FLOOR_PID=$LAST_PID
line=$(wait_line "$FLOOR_PID" "$RUN_DIR/floor.out" '^listening on ') || die "refproxy did not start"
FLOOR_URL=http://${line#listening on }
log "floor: refproxy pid $FLOOR_PID on $FLOOR_URL"

# Is Portico's data plane there? Give its first health probe a few seconds.
PORTICO_STATUS=000
for _ in $(seq 50); do
  PORTICO_STATUS=$(http_code "$PORTICO$PORTICO_PREFIX$ORIGIN_PATH")
  [ "$PORTICO_STATUS" = 200 ] && break
  sleep 0.2
done
if [ "$PORTICO_STATUS" = 200 ]; then
  PORTICO_NOTE=""
else
  PORTICO_NOTE="Portico answered HTTP $PORTICO_STATUS on GET $PORTICO_PREFIX$ORIGIN_PATH (expected 200 from the origin)"
  [ "$PORTICO_STATUS" = 404 ] && PORTICO_NOTE+=": its data plane (proxying) is not there yet"
  log "NOTE: $PORTICO_NOTE; the Portico rows are reported as not available"
fi

# Paths: name, base URL, the process whose CPU is the proxy's (none for direct).
TARGETS=(direct portico nginx floor)
declare -A BASE=([direct]=$ORIGIN [portico]=$PORTICO$PORTICO_PREFIX [nginx]=$NGINX_URL [floor]=$FLOOR_URL)
declare -A PROXY_PID=([direct]="" [portico]=$PORTICO_PID [nginx]=$NGINX_PID [floor]=$FLOOR_PID)
available() { [ "$1" != portico ] || [ "$PORTICO_STATUS" = 200 ]; }

# ---------------------------------------------------------------------------- measures
# CPU time (ns) of processes, all their threads, and their children's.
cpu_ns() {
  local total=0 p c t v
  for p in "$@"; do
    for c in "$p" $(pgrep -P "$p" 2>/dev/null || true); do
      for t in /proc/"$c"/task/*/schedstat; do
        { read -r v _ <"$t"; } 2>/dev/null || continue
        total=$((total + v))
      done
    done
  done
  echo "$total"
}
# busy_jiffies LINE...: busy jiffies (user nice system irq softirq steal) summed over these
# /proc/stat lines (`cpu` for the whole machine, `cpu0`, `cpu1`).
busy_jiffies() {
  awk -v want=" $* " 'index(want, " " $1 " ") { s += $2 + $3 + $4 + $7 + $8 + $9 } END { printf "%.0f", s }' /proc/stat
}
# The CPUs whose other load matters for a run ($1: the proxy's pid, empty for direct): when
# pinned, CPU 0 (origin and load) and CPU 1 if a proxy runs; the direct path leaves CPU 1
# idle, and what others run there does not touch the measurement. Unpinned: all of them.
noise_cpus() {
  if [ ${#PIN_PROXY[@]} -eq 0 ]; then echo cpu
  elif [ -n "$1" ]; then echo cpu0 cpu1
  else echo cpu0
  fi
}
# CPU jiffies of this shell's finished children (wrk, ssebench once they exit).
child_jiffies() { awk '{print $16 + $17}' /proc/$$/stat; }
now_ns() { date +%s%N; }
TICK=$(getconf CLK_TCK)

# Around a load run: snapshot before, then the other load (% of one core) after.
snap() {
  S_BUSY=$(busy_jiffies $(noise_cpus "$1")); S_CHILD=$(child_jiffies); S_T=$(now_ns)
  S_PROXY=0; [ -n "$1" ] && S_PROXY=$(cpu_ns "$1")
  S_ORIGIN=$(cpu_ns "$ORIGIN_PID")
}
settle() { # sets D_PROXY_NS D_SECS OTHER_PCT
  local busy child t proxy=0 origin
  busy=$(busy_jiffies $(noise_cpus "$1")); child=$(child_jiffies); t=$(now_ns)
  [ -n "$1" ] && proxy=$(cpu_ns "$1")
  origin=$(cpu_ns "$ORIGIN_PID")
  D_PROXY_NS=$((proxy - S_PROXY))
  D_ORIGIN_NS=$((origin - S_ORIGIN))
  D_LOAD_NS=$(((child - S_CHILD) * 1000000000 / TICK))
  local ours_ns=$((D_PROXY_NS + D_ORIGIN_NS + D_LOAD_NS))
  OTHER_PCT=$(awk -v b=$((busy - S_BUSY)) -v tick="$TICK" -v ours="$ours_ns" -v dt=$((t - S_T)) \
    'BEGIN { o = (b / tick * 1e9 - ours) / dt * 100; if (o < 0) o = 0; printf "%.1f", o }')
  D_SECS=$(awk -v dt=$((t - S_T)) 'BEGIN { printf "%.3f", dt / 1e9 }')
}
noisy() { awk -v o="$OTHER_PCT" -v m="$NOISE_PCT" 'BEGIN { exit !(o > m) }'; }

# Waits (up to BENCH_QUIET_WAIT seconds) until the machine's busy time over 0.5 s, less what
# our own processes used, is under the noise threshold, so a retry does not land in the
# same burst of other work.
# Waiting stops for good once BENCH_QUIET_BUDGET seconds were spent on it in total: when the
# machine stays busy, waiting longer only makes the benchmark slower.
QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-120}
QUIET_SPENT=0 # half-seconds
wait_quiet() {
  local waited=0
  while :; do
    snap "$1"; sleep 0.5; settle "$1"
    noisy || return 0
    if [ "$QUIET_SPENT" -ge $((QUIET_BUDGET * 2)) ]; then
      [ "$QUIET_SPENT" = $((QUIET_BUDGET * 2)) ] && log "spent ${QUIET_BUDGET}s waiting for quiet: no more waiting"
      QUIET_SPENT=$((QUIET_SPENT + 1))
      return 0
    fi
    [ "$waited" -ge $((QUIET_WAIT * 2)) ] && { log "still ${OTHER_PCT}% other load; measuring anyway"; return 0; }
    [ "$waited" = 0 ] && log "other load ${OTHER_PCT}% of a core: waiting up to ${QUIET_WAIT}s for quiet"
    waited=$((waited + 1))
    QUIET_SPENT=$((QUIET_SPENT + 1))
  done
}

# Before a run: the origin is restarted if it died; a dead proxy ends the benchmark.
check_alive() { # check_alive TARGET
  local status=0
  if ! kill -0 "$ORIGIN_PID" 2>/dev/null; then
    wait "$ORIGIN_PID" 2>/dev/null || status=$?
    log "WARNING: the origin (pid $ORIGIN_PID) died (exit status $status, 137 = SIGKILL, 143 = SIGTERM); restarting it on port $ORIGIN_PORT"
    ORIGIN_RESTARTS=$((ORIGIN_RESTARTS + 1))
    local p alive=()
    for p in "${PIDS[@]}"; do [ "$p" = "$ORIGIN_PID" ] || alive+=("$p"); done
    PIDS=("${alive[@]}") # never signal a reused pid at cleanup
    start_origin "$ORIGIN_PORT"
    # The proxies may have marked the worker down meanwhile: wait until every path answers.
    local t i
    for t in "${TARGETS[@]}"; do
      available "$t" || continue
      for i in $(seq 100); do [ "$(http_code "${BASE[$t]}$ORIGIN_PATH")" = 200 ] && break; sleep 0.2; done
    done
  fi
  local pid=${PROXY_PID[$1]}
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || status=$?
    tail -n 20 "$RUN_DIR/$1.err" >&2 || true
    die "$1 (pid $pid) died (exit status $status); its stderr is above"
  fi
}
ORIGIN_RESTARTS=0

RESULTS=$RUN_DIR/results.jsonl
: >"$RESULTS"

# wrk latency figure ("448.00us", "1.20ms", "1.01s") in ms.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

# After a run: sets KEPT (true/false), NOISY and DISCARD_NOTE from OTHER_PCT, the run's
# own validity ($1: empty or why it is invalid) and the attempt number ($2).
decide() {
  local invalid=$1 attempt=$2
  NOISY=false; noisy && NOISY=true
  KEPT=true; DISCARD_NOTE=""
  if [ "$attempt" -lt "$MAX_RETRIES" ] && { [ $NOISY = true ] || [ -n "$invalid" ]; }; then
    KEPT=false
    DISCARD_NOTE=" -> discarded ($([ -n "$invalid" ] && echo "$invalid" || echo "other load")), again"
  elif [ -n "$invalid" ]; then
    DISCARD_NOTE=" -> INVALID ($invalid), left out of the results"
  elif [ $NOISY = true ]; then
    DISCARD_NOTE=" -> still noisy after $MAX_RETRIES repeats, kept and flagged"
  fi
}

http_run() { # http_run TARGET REP
  local target=$1 rep=$2 pid=${PROXY_PID[$1]} attempt out url
  for attempt in $(seq 0 "$MAX_RETRIES"); do
    check_alive "$target"
    url=${BASE[$target]}$ORIGIN_PATH
    run_load "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
    wait_quiet "$pid"
    out=$RUN_DIR/wrk-$target-$rep-$attempt.txt
    snap "$pid"
    run_load "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$url" >"$out" 2>&1 || true
    settle "$pid"
    # Portico's access log grows by ~50 MB a run; dropping it keeps its write-back (kernel
    # threads, counted as other load) out of the next runs. It is opened for appending.
    : >"$RUN_DIR/portico-access.log"
    local reqs rps p50 p99 non2xx errors cpu=null origin_cpu=null load_cpu=null invalid=""
    reqs=$(awk '/requests in/ {print $1}' "$out"); reqs=${reqs:-0}
    rps=$(awk '/^Requests\/sec/ {print $2}' "$out"); rps=${rps:-0}
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
    errors=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out"); errors=${errors:-0}
    if [ "$reqs" -gt 0 ]; then
      [ -n "$pid" ] && cpu=$(awk -v c="$D_PROXY_NS" -v r="$reqs" 'BEGIN { printf "%.2f", c / r / 1000 }')
      origin_cpu=$(awk -v c="$D_ORIGIN_NS" -v r="$reqs" 'BEGIN { printf "%.2f", c / r / 1000 }')
      load_cpu=$(awk -v c="$D_LOAD_NS" -v r="$reqs" 'BEGIN { printf "%.2f", c / r / 1000 }')
    fi
    if [ "$reqs" = 0 ]; then invalid="no request completed"
    elif [ "$non2xx" != 0 ]; then invalid="$non2xx non-2xx answers"
    elif [ "$errors" != 0 ]; then invalid="$errors socket errors"
    fi
    decide "$invalid" "$attempt"
    printf '{"scenario":"http","target":"%s","rep":%d,"attempt":%d,"kept":%s,"valid":%s,"noisy":%s,"secs":%s,"requests":%d,"rps":%s,"p50_ms":%s,"p99_ms":%s,"cpu_us":%s,"origin_cpu_us":%s,"wrk_cpu_us":%s,"other_pct":%s,"non2xx":%d,"socket_errors":%d}\n' \
      "$target" "$rep" "$attempt" "$KEPT" "$([ -z "$invalid" ] && echo true || echo false)" "$NOISY" "$D_SECS" \
      "$reqs" "$rps" "$p50" "$p99" "$cpu" "$origin_cpu" "$load_cpu" "$OTHER_PCT" "$non2xx" "$errors" >>"$RESULTS"
    log "http rep $rep $target: $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU $cpu µs/req, other load $OTHER_PCT%$DISCARD_NOTE"
    [ $KEPT = true ] && return 0
  done
  return 0
}

# One line about an ssebench result, for the progress log.
SSE_SUMMARY_PY='
import json, sys
j = json.load(sys.stdin)
d, f = j.get("delay_us") or {}, j.get("first_event_ms") or {}
print("%s events, %s failed streams, delay p50 %s µs p99 %s µs, first event p50 %s ms"
      % (j.get("events"), j.get("streams_failed"), d.get("p50"), d.get("p99"), f.get("p50")))
'
json_get() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))' "$1" "$2"; }

sse_run() { # sse_run TARGET REP
  local target=$1 rep=$2 pid=${PROXY_PID[$1]} attempt out url
  for attempt in $(seq 0 "$MAX_RETRIES"); do
    check_alive "$target"
    url="${BASE[$target]}/sse?events=$SSE_EVENTS&interval_ms=$SSE_INTERVAL_MS"
    wait_quiet "$pid"
    out=$RUN_DIR/sse-$target-$rep-$attempt.json
    snap "$pid"
    run_load "${PIN_LOAD[@]}" "$BIN/ssebench" --url "$url" --streams "$SSE_STREAMS" --events "$SSE_EVENTS" \
      --ramp-ms "$SSE_INTERVAL_MS" --timeout-seconds 120 >"$out" 2>"$out.err" || true
    settle "$pid"
    local json events failed cpu=null invalid=""
    json=$(head -n1 "$out")
    [ -n "$json" ] || json='{"events":0,"streams_ok":0,"streams_failed":'"$SSE_STREAMS"',"errors":{"ssebench printed nothing":1}}'
    events=$(json_get "$json" events)
    failed=$(json_get "$json" streams_failed)
    [ -n "$pid" ] && [ "$events" -gt 0 ] && cpu=$(awk -v c="$D_PROXY_NS" -v e="$events" 'BEGIN { printf "%.2f", c / e / 1000 }')
    [ "$failed" = 0 ] || invalid="$failed failed streams"
    decide "$invalid" "$attempt"
    printf '{"scenario":"sse","target":"%s","rep":%d,"attempt":%d,"kept":%s,"valid":%s,"noisy":%s,"secs":%s,"cpu_us_per_event":%s,"other_pct":%s,"ssebench":%s}\n' \
      "$target" "$rep" "$attempt" "$KEPT" "$([ -z "$invalid" ] && echo true || echo false)" "$NOISY" "$D_SECS" \
      "$cpu" "$OTHER_PCT" "$json" >>"$RESULTS"
    log "sse rep $rep $target: $(printf '%s' "$json" | python3 -c "$SSE_SUMMARY_PY"), proxy CPU $cpu µs/event, other load $OTHER_PCT%$DISCARD_NOTE"
    [ $KEPT = true ] && return 0
  done
  return 0
}

# Interleaved repetitions; each repetition starts one path later than the previous one, so
# no path always runs first (right after another path's load) or last.
interleave() { # interleave RUNNER REPS
  local runner=$1 reps=$2 rep i n=${#TARGETS[@]}
  for rep in $(seq 1 "$reps"); do
    for i in $(seq 0 $((n - 1))); do
      local target=${TARGETS[$(((rep - 1 + i) % n))]}
      available "$target" || continue
      "$runner" "$target" "$rep"
    done
  done
}

START_TIME=$(date -u '+%Y-%m-%d %H:%M UTC')
if wants http; then
  log "scenario http: $REPS reps x ${#TARGETS[@]} paths x (${WARMUP}s warm-up + ${SECS}s), wrk -t1 -c$CONNS"
  interleave http_run "$REPS"
fi
if wants sse; then
  log "scenario sse: $SSE_REPS reps x ${#TARGETS[@]} paths, $SSE_STREAMS streams x $SSE_EVENTS events every ${SSE_INTERVAL_MS} ms"
  interleave sse_run "$SSE_REPS"
fi

# ---------------------------------------------------------------------------- report
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's|^nginx version: ||')
WRK_VERSION=$( (wrk -v 2>&1 || true) | head -n1 | awk '{print $1, $2}')
export RESULTS OUT START_TIME PINNING NGINX_VERSION WRK_VERSION PORTICO_STATUS PORTICO_NOTE
export REPS SECS CONNS WARMUP SSE_REPS SSE_STREAMS SSE_EVENTS SSE_INTERVAL_MS NOISE_PCT MAX_RETRIES
export PORTICO_THREADS ORIGIN_PATH PORTICO_PREFIX ORIGIN_RESTARTS QUIET_WAIT QUIET_BUDGET RUN_DIR
# The scenarios this report covers (`scale` and `async` write their own).
SCENARIOS_RUN=""
for s in http sse; do ! wants "$s" || SCENARIOS_RUN+="$s "; done
export SCENARIOS_RUN
export MACHINE_CPUS=$(nproc)
export MACHINE_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
export MACHINE_KERNEL=$(uname -r)
export MACHINE_OS=$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || echo unknown)
export RUSTC_VERSION=$(rustc -V 2>/dev/null || echo unknown)
export GIT_REV
export NGINX_CONF_TEXT=$(cat "$RUN_DIR/nginx.conf")
export PORTICO_CONF_TEXT=$(cat "$RUN_DIR/portico.toml")
mkdir -p "$(dirname "$OUT")"

python3 - <<'PY'
import json, os, re, statistics

env = os.environ
rows = [json.loads(line) for line in open(env["RESULTS"]) if line.strip()]
# Used for the figures: the last try of each run, unless it was invalid (errors, failed streams).
kept = [r for r in rows if r["kept"] and r["valid"]]
names = {"direct": "direct (no proxy)", "portico": "Portico", "nginx": "nginx",
         "floor": "hyper floor (refproxy)"}
order = ["portico", "nginx", "floor", "direct"]
pnote = env.get("PORTICO_NOTE", "")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def rng(xs, digits=1):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{fmt(med(xs), digits)} ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def ratio(a, b):
    return "—" if a is None or b in (None, 0) else f"{a / b:.2f}×"


def not_available(target):
    return target == "portico" and env["PORTICO_STATUS"] != "200"


def norm(r):
    """Proxy CPU per request over wrk's CPU per request in the same run."""
    c, w = r.get("cpu_us"), r.get("wrk_cpu_us")
    return c / w if c and w else None


def by_target(scenario):
    out = {}
    for r in kept:
        if r["scenario"] == scenario:
            out.setdefault(r["target"], []).append(r)
    return out


def verdict(r):
    if not r["kept"]:
        return "discarded"
    if not r["valid"]:
        return "invalid"
    return "kept, noisy" if r["noisy"] else "kept"


def raw_table(scenario, header, cells):
    lines = [
        "<details><summary>Every run (discarded ones included)</summary>",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        if r["scenario"] == scenario:
            lines.append("| " + " | ".join(str(c) for c in cells(r)) + " |")
    lines += ["", "</details>"]
    return lines


def discard_line(scenario):
    all_runs = [r for r in rows if r["scenario"] == scenario]
    noisy = sum(1 for r in all_runs if not r["kept"] and r["valid"])
    broken = sum(1 for r in all_runs if not r["kept"] and not r["valid"])
    flagged = sum(1 for r in all_runs if r["kept"] and r["valid"] and r["noisy"])
    invalid = sum(1 for r in all_runs if r["kept"] and not r["valid"])
    line = (
        f"Runs discarded and repeated: **{noisy}** of {len(all_runs)} for other load above "
        f"{env['NOISE_PCT']}% of one core"
    )
    if broken:
        line += f", {broken} for errors"
    if flagged:
        line += f"; {flagged} kept although noisy (still noisy after {env['MAX_RETRIES']} repeats)"
    if invalid:
        line += f"; **{invalid} runs left out: still failing after {env['MAX_RETRIES']} repeats**"
    if env.get("ORIGIN_RESTARTS", "0") != "0":
        line += f"; the origin died and was restarted {env['ORIGIN_RESTARTS']} times during the whole benchmark"
    return line + "."


def http_section():
    t = by_target("http")
    reps, secs, conns = env["REPS"], env["SECS"], env["CONNS"]
    lines = [
        "## Scenario 1: small JSON over 32 keep-alive connections",
        "",
        f"Measured {env['START_TIME']} at `{env['GIT_REV']}`: `wrk -t1 -c{conns} -d{secs}s --latency` "
        f"(after a {env['WARMUP']} s warm-up) on `GET {env['ORIGIN_PATH']}` of the origin, "
        f"{reps} interleaved repetitions per path. Median (min–max) over the repetitions. "
        "Proxy CPU is the proxy process's CPU time (all threads, nginx's worker included) "
        "during the run divided by the requests wrk completed.",
        "",
        "The last two columns divide the proxy's CPU per request by wrk's own CPU per request in "
        "the same run: the machine's speed drifts from run to run (host contention, invisible "
        "as steal), moving every process's cost in step, and this ratio cancels it.",
        "",
        "| path | requests/s | p50 ms | p99 ms | proxy CPU µs/request | CPU vs nginx "
        "| proxy CPU ÷ wrk CPU | that vs nginx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    nginx_cpu = med(r["cpu_us"] for r in t.get("nginx", []))
    nginx_norm = med(norm(r) for r in t.get("nginx", []))
    for target in order:
        if not_available(target):
            lines.append(f"| {names[target]} | not available | | | | | | |")
            continue
        rs = t.get(target, [])
        cpu = med(r["cpu_us"] for r in rs)
        nrm = med(norm(r) for r in rs)
        proxy = target != "direct"
        lines.append(
            f"| {names[target]} | {rng([r['rps'] for r in rs], 0)} | {fmt(med(r['p50_ms'] for r in rs), 3)} "
            f"| {rng([r['p99_ms'] for r in rs], 3)} | {rng([r['cpu_us'] for r in rs], 1)} "
            f"| {ratio(cpu, nginx_cpu) if proxy else '—'} "
            f"| {rng([norm(r) for r in rs], 2) if proxy else '—'} "
            f"| {ratio(nrm, nginx_norm) if proxy else '—'} |"
        )
    lines.append("")
    if not_available("portico"):
        lines.append(f"Portico: not available in this run. {pnote}.")
    else:
        pc = {r["rep"]: r["cpu_us"] for r in t.get("portico", [])}
        nc = {r["rep"]: r["cpu_us"] for r in t.get("nginx", [])}
        paired = [pc[k] / nc[k] for k in pc if k in nc and pc[k] and nc[k]]
        pn = {r["rep"]: norm(r) for r in t.get("portico", [])}
        nn = {r["rep"]: norm(r) for r in t.get("nginx", [])}
        paired_norm = [pn[k] / nn[k] for k in pn if k in nn and pn[k] and nn[k]]
        if paired and paired_norm:
            lines.append(
                f"**Portico / nginx CPU per request: {ratio(med(r['cpu_us'] for r in t.get('portico', [])), nginx_cpu)}** "
                f"(ratio of the medians; per repetition {min(paired):.2f}×–{max(paired):.2f}×); "
                f"**normalized by wrk's CPU: {ratio(med(pn.values()), nginx_norm)}** "
                f"(per repetition {min(paired_norm):.2f}×–{max(paired_norm):.2f}×)."
            )
    lines += ["", discard_line("http"), ""]
    lines += raw_table(
        "http",
        ["path", "rep", "try", "kept", "req/s", "p50 ms", "p99 ms", "proxy CPU µs/req",
         "origin CPU µs/req", "wrk CPU µs/req", "other load % of a core", "non-2xx", "socket errors"],
        lambda r: [names[r["target"]], r["rep"], r["attempt"], verdict(r),
                   fmt(r["rps"], 0), r["p50_ms"], r["p99_ms"], fmt(r["cpu_us"], 2),
                   fmt(r["origin_cpu_us"], 2), fmt(r.get("wrk_cpu_us"), 2), r["other_pct"],
                   r["non2xx"], r["socket_errors"]],
    )
    return lines


def sse_section():
    t = by_target("sse")
    lines = [
        "## Scenario 2: SSE per-event delay",
        "",
        f"Measured {env['START_TIME']} at `{env['GIT_REV']}`: `ssebench --streams {env['SSE_STREAMS']} "
        f"--events {env['SSE_EVENTS']} --ramp-ms {env['SSE_INTERVAL_MS']}` on the origin's "
        f"`GET /sse?events={env['SSE_EVENTS']}&interval_ms={env['SSE_INTERVAL_MS']}`, one connection per "
        f"stream, stream starts spread over one interval; {env['SSE_REPS']} interleaved repetitions per "
        "path. Delay = receive time − the event's `sent_at_us` (same clock). Percentiles over all "
        "events of a repetition; the table gives their median over the repetitions (p99: with "
        "min–max). Added = proxy − direct, from those medians; origin and ssebench share CPU 0 "
        "while the proxy has CPU 1 to itself, so an added delay within a few tens of µs of 0 "
        "(either sign) is noise. Proxy CPU per event includes the streams' connection set-up.",
        "",
        "| path | events/run | failed streams | delay p50 µs | delay p99 µs | delay max µs "
        "| first event p50 ms | first event p99 ms | added p50 µs | added p99 µs "
        "| added first event p50 ms | proxy CPU µs/event |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def stat(rs, *keys):
        vals = []
        for r in rs:
            v = r["ssebench"]
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            vals.append(v)
        return vals

    direct = t.get("direct", [])
    d50 = med(stat(direct, "delay_us", "p50"))
    d99 = med(stat(direct, "delay_us", "p99"))
    dfirst = med(stat(direct, "first_event_ms", "p50"))
    for target in order:
        if not_available(target):
            lines.append(f"| {names[target]} | not available | | | | | | | | | | |")
            continue
        rs = t.get(target, [])
        p50 = med(stat(rs, "delay_us", "p50"))
        p99 = med(stat(rs, "delay_us", "p99"))
        first = med(stat(rs, "first_event_ms", "p50"))
        proxy = target != "direct"
        lines.append(
            f"| {names[target]} | {fmt(med(stat(rs, 'events')), 0)} | {sum(x or 0 for x in stat(rs, 'streams_failed'))} "
            f"| {fmt(p50, 0)} | {rng(stat(rs, 'delay_us', 'p99'), 0)} | {fmt(med(stat(rs, 'delay_us', 'max')), 0)} "
            f"| {fmt(first, 3)} | {fmt(med(stat(rs, 'first_event_ms', 'p99')), 3)} "
            f"| {fmt(p50 - d50, 0) if proxy and None not in (p50, d50) else '—'} "
            f"| {fmt(p99 - d99, 0) if proxy and None not in (p99, d99) else '—'} "
            f"| {fmt(first - dfirst, 3) if proxy and None not in (first, dfirst) else '—'} "
            f"| {rng([r['cpu_us_per_event'] for r in rs], 1) if proxy else '—'} |"
        )
    lines.append("")
    if not_available("portico"):
        lines.append(f"Portico: not available in this run. {pnote}.")
        lines.append("")
    errors = {}
    for r in rows:
        if r["scenario"] == "sse":
            for e, n in (r["ssebench"].get("errors") or {}).items():
                errors[(r["target"], e)] = errors.get((r["target"], e), 0) + n
    if errors:
        lines.append("Stream failures, all tries: " + "; ".join(
            f"{names[tg]}: {n} × {e}" for (tg, e), n in sorted(errors.items())) + ".")
        lines.append("")
    lines += [discard_line("sse"), ""]
    lines += raw_table(
        "sse",
        ["path", "rep", "try", "kept", "events", "failed streams", "delay p50 µs", "p90 µs", "p99 µs",
         "max µs", "first event p50 ms", "p99 ms", "proxy CPU µs/event", "other load % of a core"],
        lambda r: [names[r["target"]], r["rep"], r["attempt"], verdict(r),
                   r["ssebench"].get("events"), r["ssebench"].get("streams_failed"),
                   *(r["ssebench"].get("delay_us", {}).get(k) for k in ("p50", "p90", "p99", "max")),
                   *(r["ssebench"].get("first_event_ms", {}).get(k) for k in ("p50", "p99")),
                   fmt(r["cpu_us_per_event"], 2), r["other_pct"]],
    )
    return lines


INTRO = """# Benchmarks

Portico sits on every inference request, so what it costs is measured against the proxy
people would otherwise put there, nginx, side by side on the same machine in the same run,
and against the origin reached directly. `scripts/bench.sh` produces this whole file: the
text up to "Setup" is fixed in the script, everything after it comes from the last run of
each scenario (`scripts/bench.sh http` re-runs only scenario 1 and keeps the other sections).
Scenarios that bring their own processes write their own reports: the autoscaler in
[benchmarks-scaling.md](benchmarks-scaling.md) (`scale`), async intake, draining and
end-to-end cost per job in [benchmarks-async.md](benchmarks-async.md) (`async`).

## Method

- **Headline figure: proxy CPU time per request.** The CPU time of the proxy process (all
  its threads; for nginx the master and its worker) is read from
  `/proc/<pid>/task/*/schedstat` before and after a load run and divided by the requests
  completed. On a shared machine it is far steadier than requests/s or latency, which move
  with whatever else runs. Lower is better; the ratio Portico / nginx from the same run is
  what counts, not the absolute figure.
- **Normalized by the load generator.** Even so, this virtual machine's speed drifts from
  run to run by ±25% (contention on the host, not visible as steal time): the proxy's,
  the origin's and wrk's CPU per request rise and fall together. wrk does the same work on
  every path, so the proxy's CPU per request divided by wrk's in the same run cancels the
  drift; that ratio (and Portico's over nginx's) is the steadiest figure here: it moved by
  ±3–10% between repetitions where the raw figure moved by ±20–30%. Both are reported.
- **Same origin, same load, same run.** The origin is `fakeworker` (docs/fakeworker.md) with
  its access log and request recording off. Paths are measured interleaved, each repetition
  starting one path later than the previous, and reported as median and range.
- **Pinning.** On 2 CPUs the proxy runs alone on CPU 1; origin and load generator share
  CPU 0, so the proxy's figure is not disturbed by the load it serves.
- **Noise control.** `/proc/stat` gives the busy time of the CPUs a run uses (CPU 0, and
  CPU 1 when a proxy runs there); minus what the measured processes used (proxy, origin, wrk
  or ssebench), the rest is other load. Before each run the script waits (up to 10 s, 2 min
  in all) for the other load to drop; a run with other load above the threshold anyway is
  discarded and repeated (at most twice; a third noisy run is kept and flagged). A run with
  errors (non-2xx answers, socket errors, failed streams) is repeated the same way and never
  counted. This machine is shared: other sessions build and test on it, and a virtual
  machine's CPU can be taken by its host (steal time, counted as other load). The raw table
  under each scenario shows every try with its other load.
- **The peer.** nginx is a plain streaming reverse proxy: one worker, `proxy_buffering off`,
  HTTP/1.1 keep-alive upstream pool (64), keep-alive request limits lifted (nginx would
  otherwise reopen every client and upstream connection after 1000 requests), no access log.
  It does not add the `X-Forwarded-*`, `Forwarded` and `X-Request-Id` headers Portico adds
  (with them nginx measured ~10% more CPU per request here): the plain proxy is the harder
  bar. Portico runs with `server.worker_threads = 1` for the per-core comparison and its
  access log written to a file.
- **The floor.** `refproxy` (bench/src/bin/refproxy.rs) is the data-plane design Portico is
  built on and nothing else: one current-thread runtime, hyper HTTP/1.1 on both sides,
  upstream connections owned by the same thread. No routing, header rewriting, limits,
  timeouts, metrics or access log. Portico over the floor is what Portico's own stages
  cost; the floor over nginx is what hyper and tokio cost.
- **SSE delay.** `ssebench` (bench/src/bin/ssebench.rs) opens one HTTP/1.1 connection per
  stream and, for every event, subtracts the origin's `sent_at_us` timestamp from its own
  receive time (same machine clock). Added delay = through a proxy − direct.
"""

SETUP = f"""## Setup of the last run

- Machine: {env['MACHINE_CPUS']} CPUs, {env['MACHINE_MODEL']}, Linux {env['MACHINE_KERNEL']}, {env['MACHINE_OS']}
  (a shared virtual machine: other work and the host's steal time come and go).
- Generated {env['START_TIME']}; Portico at `{env['GIT_REV']}` ({env['RUSTC_VERSION']}, release profile);
  {env['NGINX_VERSION']}; {env['WRK_VERSION']}.
- Pinning: {env['PINNING']}.
- Origin: `RUST_LOG=warn fakeworker --port 0 --record-limit 0`.
- Portico: `portico run --config portico.toml`, from
  [bench/configs/portico.toml.template](../bench/configs/portico.toml.template): one public
  static endpoint `bench/origin` with the origin as its only worker, `worker_threads =
  {env['PORTICO_THREADS']}`, access log to a file. Requests go to `{env['PORTICO_PREFIX']}/<path>`.
- nginx: `nginx -p <run>/nginx -e <run>/nginx/error.log -c nginx.conf -g 'daemon off;'`, from
  [bench/peers/nginx.conf.template](../bench/peers/nginx.conf.template).
- Load (`<prefix>` is empty for direct and for nginx, `{env['PORTICO_PREFIX']}` for Portico):
  `wrk -t1 -c{env['CONNS']} -d{env['SECS']}s --latency http://127.0.0.1:<port><prefix>{env['ORIGIN_PATH']}`;
  `ssebench --url 'http://127.0.0.1:<port><prefix>/sse?events={env['SSE_EVENTS']}&interval_ms={env['SSE_INTERVAL_MS']}' --streams {env['SSE_STREAMS']} --events {env['SSE_EVENTS']} --ramp-ms {env['SSE_INTERVAL_MS']}`.
- Noise threshold: other load above {env['NOISE_PCT']}% of one core during a run; up to
  {env['QUIET_WAIT']} s waited for quiet before each run ({env['QUIET_BUDGET']} s in all);
  {env['MAX_RETRIES']} repeats at most.
- Re-run: `scripts/bench.sh` (all), `scripts/bench.sh http`, `scripts/bench.sh sse`;
  `BENCH_REPS`, `BENCH_SECONDS`, `BENCH_SSE_STREAMS` and more at the top of the script.

<details><summary>Generated configs of the last run</summary>

```nginx
{env['NGINX_CONF_TEXT']}
```

```toml
{env['PORTICO_CONF_TEXT']}
```

</details>
"""
if pnote:
    SETUP += f"\n**Portico was not available in the last run:** {pnote}.\n"

SECTIONS = {"http": http_section, "sse": sse_section}
NOT_RUN = {"http": "scripts/bench.sh http", "sse": "scripts/bench.sh sse"}
ran = env["SCENARIOS_RUN"].split()

old = open(env["OUT"]).read() if os.path.exists(env["OUT"]) else ""
parts = [INTRO, SETUP]
for name in ["http", "sse"]:
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    if name in ran:
        body = "\n".join(SECTIONS[name]())
    else:
        m = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), old, re.S)
        body = m.group(1) if m else f"## Scenario `{name}`\n\nNot run yet: `{NOT_RUN[name]}`."
    parts.append(f"{begin}\n{body}\n{end}\n")
open(env["OUT"], "w").write("\n".join(parts))

# The tables on the terminal too.
for name in ran:
    text = "\n".join(SECTIONS[name]())
    print(text.split("<details>")[0].rstrip() + "\n")
PY
log "wrote $OUT"
