# shellcheck shell=bash
# scripts/bench/lib.sh — sourced by scripts/bench.sh: logging, processes and clean-up, CPU and
# noise measures, the retry loop every measured run goes through, and the interleaving.
# Reads the settings of bench.sh (RUN_DIR, PIN_*, NOISE_PCT, MAX_RETRIES, ...).

# log MESSAGE...: a progress line on stderr.
log() { printf '[bench] %s\n' "$*" >&2; }
# die MESSAGE...: logs an error and exits (cleanup stops everything).
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------- processes
PIDS=()
LOAD_PID=""

# cleanup: the EXIT trap; stops every process started here and removes the run directory.
cleanup() {
  local status=$? pid i alive
  trap - EXIT INT TERM
  [ "$status" = 0 ] || log "stopping everything (exit status $status)"
  [ -z "$LOAD_PID" ] || kill -TERM "$LOAD_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 30); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${RUN_DIR:-}" ]; then
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "run directory kept: $RUN_DIR"; else rm -rf "$RUN_DIR"; fi
  fi
  exit "$status"
}

# start NAME PIN... -- COMMAND...: runs COMMAND in the background, output in $RUN_DIR/NAME.*;
# sets LAST_PID.
start() {
  local name=$1; shift
  local pin=()
  while [ "$1" != -- ]; do pin+=("$1"); shift; done
  shift
  "${pin[@]}" "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# stop PID: SIGTERM, up to 5 s, then SIGKILL; forgets the pid so cleanup never signals it
# again (it may be reused).
stop() {
  local pid=$1 i p keep=()
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# run_load COMMAND...: runs a load generator and waits for it. It runs in the background so
# that Ctrl-C interrupts the `wait` and the INT trap runs at once (bash would otherwise skip
# the trap when wrk catches SIGINT and exits normally); cleanup stops it.
run_load() {
  "$@" &
  LOAD_PID=$!
  local status=0
  wait "$LOAD_PID" || status=$?
  LOAD_PID=""
  return $status
}

# wait_line PID FILE REGEX: the first line of FILE matching REGEX, once written (30 s at most).
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

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_code URL: the status of a GET (000 when nothing answers).
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || echo 000; }

# wait_http URL: polls until URL answers 200 (20 s at most); fails otherwise.
wait_http() {
  local i
  for i in $(seq 100); do [ "$(http_code "$1")" = 200 ] && return 0; sleep 0.2; done
  return 1
}

# fill_template TEMPLATE OUTPUT KEY=VALUE...: replaces @KEY@ by VALUE (and @ORIGIN_PORT@).
fill_template() {
  local template=$1 out=$2 kv args=(-e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g")
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$template" >"$out"
}

# json_get JSON KEY: one top-level member of a JSON object (0 when absent).
json_get() { python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print(0 if v is None else v)' "$1" "$2"; }

# ---------------------------------------------------------------------------- measures
# cpu_ns PID...: CPU time (ns) of processes, all their threads, and their children's.
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

# noise_cpus PID: the CPUs whose other load matters for a run (PID: the proxy's, empty for
# direct). Pinned: CPU 0 (origin and load), and CPU 1 if a proxy runs. Unpinned: all.
noise_cpus() {
  if [ ${#PIN_PROXY[@]} -eq 0 ]; then echo cpu
  elif [ -n "$1" ]; then echo cpu0 cpu1
  else echo cpu0
  fi
}

# child_jiffies: CPU jiffies of this shell's finished children (load generators once they exit).
child_jiffies() { awk '{print $16 + $17}' /proc/$$/stat; }
now_ns() { date +%s%N; }
TICK=$(getconf CLK_TCK)

# snap PID: snapshot before a load run (machine busy time, our children, proxy, origin).
snap() {
  S_BUSY=$(busy_jiffies "$(noise_cpus "$1")"); S_CHILD=$(child_jiffies); S_T=$(now_ns)
  S_PROXY=0; [ -z "$1" ] || S_PROXY=$(cpu_ns "$1")
  S_ORIGIN=$(cpu_ns "$ORIGIN_PID")
}

# settle PID: after the run; sets D_PROXY_NS D_ORIGIN_NS D_LOAD_NS D_SECS and OTHER_PCT, the
# busy time of the CPUs used less what the measured processes used, in % of one core.
settle() {
  local busy child t proxy=0 origin
  busy=$(busy_jiffies "$(noise_cpus "$1")"); child=$(child_jiffies); t=$(now_ns)
  [ -z "$1" ] || proxy=$(cpu_ns "$1")
  origin=$(cpu_ns "$ORIGIN_PID")
  D_PROXY_NS=$((proxy - S_PROXY))
  D_ORIGIN_NS=$((origin - S_ORIGIN))
  D_LOAD_NS=$(((child - S_CHILD) * 1000000000 / TICK))
  local ours_ns=$((D_PROXY_NS + D_ORIGIN_NS + D_LOAD_NS))
  OTHER_PCT=$(awk -v b=$((busy - S_BUSY)) -v tick="$TICK" -v ours="$ours_ns" -v dt=$((t - S_T)) \
    'BEGIN { o = (b / tick * 1e9 - ours) / dt * 100; if (o < 0) o = 0; printf "%.1f", o }')
  D_SECS=$(awk -v dt=$((t - S_T)) 'BEGIN { printf "%.3f", dt / 1e9 }')
}

# noisy: whether OTHER_PCT is above the threshold.
noisy() { awk -v o="$OTHER_PCT" -v m="$NOISE_PCT" 'BEGIN { exit !(o > m) }'; }

# per_unit NS COUNT: NS / COUNT in µs with 2 decimals, `null` when COUNT is 0.
per_unit() { awk -v c="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", c / n / 1000; else printf "null" }'; }

# wait_quiet PID: waits (up to QUIET_WAIT seconds) until the machine's busy time over 0.5 s,
# less what our own processes used, is under the noise threshold, so a run (or its retry)
# does not land in a burst of other work. Waiting stops for good once QUIET_BUDGET seconds
# were spent on it in total: when the machine stays busy, waiting only makes the run longer.
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

# decide INVALID ATTEMPT: after a run, sets KEPT (true/false), NOISY and DISCARD_NOTE from
# OTHER_PCT, the run's own validity (INVALID: empty or why it is invalid) and the attempt.
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

# measure SCENARIO TARGET REP [ARG]: one measured run with the noise and error retries.
# Each try calls `SCENARIO_once TARGET REP ATTEMPT [ARG]` right after snap; it runs the load,
# calls `settle PID` as soon as the load ends (its figures need the CPU deltas), and sets
# INVALID (empty when valid), ROW (JSON members of its figures, without braces) and SUMMARY
# (one line for the log). `SCENARIO_warm TARGET [ARG]`, when defined, runs before.
measure() {
  local scenario=$1 target=$2 rep=$3 arg=${4:-} pid=${PROXY_PID[$2]} attempt
  for attempt in $(seq 0 "$MAX_RETRIES"); do
    check_alive "$target"
    if declare -F "${scenario}_warm" >/dev/null; then "${scenario}_warm" "$target" "$arg"; fi
    wait_quiet "$pid"
    snap "$pid"
    INVALID="" ROW="" SUMMARY=""
    "${scenario}_once" "$target" "$rep" "$attempt" "$arg"
    decide "$INVALID" "$attempt"
    printf '{"scenario":"%s","target":"%s","rep":%d,"attempt":%d,"kept":%s,"valid":%s,"noisy":%s,"secs":%s,"other_pct":%s,%s}\n' \
      "$scenario" "$target" "$rep" "$attempt" "$KEPT" "$([ -z "$INVALID" ] && echo true || echo false)" \
      "$NOISY" "$D_SECS" "$OTHER_PCT" "$ROW" >>"$RESULTS"
    log "$scenario rep $rep $target${arg:+ ($arg)}: $SUMMARY, other load $OTHER_PCT%$DISCARD_NOTE"
    [ "$KEPT" = true ] && return 0
  done
  return 0
}

# interleave SCENARIO REPS TARGET... [-- ARG...]: REPS repetitions over the targets (and for
# each ARG, e.g. a rate); each repetition starts one target later than the previous one, so
# no target always runs first (right after another one's load) or last.
interleave() {
  local scenario=$1 reps=$2 rep i n targets=() args=() arg
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do targets+=("$1"); shift; done
  [ $# -gt 0 ] && { shift; args=("$@"); }
  [ ${#args[@]} -gt 0 ] || args=("")
  n=${#targets[@]}
  for rep in $(seq 1 "$reps"); do
    for arg in "${args[@]}"; do
      for i in $(seq 0 $((n - 1))); do
        local target=${targets[$(((rep - 1 + i) % n))]}
        available "$target" || continue
        measure "$scenario" "$target" "$rep" "$arg"
      done
    done
  done
}

# timed NAME COMMAND...: runs COMMAND and appends `NAME SECONDS` to $TIMINGS.
timed() {
  local name=$1 t0 status=0
  shift
  t0=$(date +%s)
  "$@" || status=$?
  echo "$name $(($(date +%s) - t0))" >>"$TIMINGS"
  return $status
}
