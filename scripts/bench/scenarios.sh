# shellcheck shell=bash disable=SC2034 # INVALID, ROW and SUMMARY are read by measure (lib.sh)
# scripts/bench/scenarios.sh — sourced by scripts/bench.sh: one measured run of each proxy
# scenario (`SCENARIO_once`, called by `measure` in lib.sh between its CPU snapshots), the
# RSS scenario (fresh proxies), and the self-contained scenarios (async, ipfilter, scale).

# ---------------------------------------------------------------------------- 1: http
# write_post_lua: the wrk script that makes every request the scenario's small JSON POST,
# and the body alone for h2load -d.
write_post_lua() {
  python3 - "$POST_BODY" >"$RUN_DIR/post.lua" <<'PY'
import json, sys
body = sys.argv[1]
print('wrk.method = "POST"')
print("wrk.body = " + json.dumps(body))
print('wrk.headers["Content-Type"] = "application/json"')
PY
  printf '%s' "$POST_BODY" >"$RUN_DIR/post.json"
}

# http_warm TARGET: a short wrk run before the measured one (connections, pools, caches).
http_warm() {
  run_load "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$RUN_DIR/post.lua" \
    "${BASE[$1]}$POST_PATH" >/dev/null 2>&1 || true
}

# to_ms VALUE: wrk's latency figure ("448.00us", "1.20ms", "1.01s") in ms.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

# http_once TARGET REP ATTEMPT: wrk -t1 -cCONNS of the JSON POST; requests/s, p50/p99 and CPU
# per request of proxy, origin and wrk.
http_once() {
  local target=$1 out=$RUN_DIR/wrk-$1-$2-$3.txt reqs rps p50 p99 non2xx errors cpu=null ocpu=null lcpu=null
  run_load "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$RUN_DIR/post.lua" \
    "${BASE[$target]}$POST_PATH" >"$out" 2>&1 || true
  settle "${PROXY_PID[$target]}"
  # Portico's access log (and that of nginx doing the same work) grows by tens of MB a run;
  # dropping it keeps its write-back (kernel threads, counted as other load) out of the next
  # runs. Both open it for appending.
  [[ $target != portico* && $target != nginx_work ]] || : >"$RUN_DIR/$target/access.log"
  reqs=$(awk '/requests in/ {print $1}' "$out"); reqs=${reqs:-0}
  rps=$(awk '/^Requests\/sec/ {print $2}' "$out"); rps=${rps:-0}
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  errors=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out"); errors=${errors:-0}
  [ -z "${PROXY_PID[$target]}" ] || cpu=$(per_unit "$D_PROXY_NS" "$reqs")
  ocpu=$(per_unit "$D_ORIGIN_NS" "$reqs")
  lcpu=$(per_unit "$D_LOAD_NS" "$reqs")
  if [ "$reqs" = 0 ]; then INVALID="no request completed"
  elif [ "$non2xx" != 0 ]; then INVALID="$non2xx non-2xx answers"
  elif [ "$errors" != 0 ]; then INVALID="$errors socket errors"
  fi
  ROW=$(printf '"requests":%d,"rps":%s,"p50_ms":%s,"p99_ms":%s,"cpu_us":%s,"origin_cpu_us":%s,"wrk_cpu_us":%s,"non2xx":%d,"socket_errors":%d' \
    "$reqs" "$rps" "$p50" "$p99" "$cpu" "$ocpu" "$lcpu" "$non2xx" "$errors")
  SUMMARY="$rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU $cpu µs/req"
}

# ---------------------------------------------------------------------------- 2: latency
# latency_once TARGET REP ATTEMPT RATE: latbench, one connection, open loop at RATE requests/s
# of the JSON POST, latency from each request's scheduled send time.
latency_once() {
  local target=$1 rate=$4 out=$RUN_DIR/lat-$1-$4-$2-$3.json json cpu=null
  run_load "${PIN_LOAD[@]}" "$BIN/latbench" --url "${BASE[$target]}$POST_PATH" --rate "$rate" \
    --seconds "$LAT_SECONDS" --connections 1 --warmup-seconds "$WARMUP" --method POST \
    --body "$POST_BODY" --header 'content-type: application/json' >"$out" 2>"$out.err" || true
  settle "${PROXY_PID[$target]}"
  json=$(head -n1 "$out")
  [ -n "$json" ] || json='{"requests":0,"errors":1,"non_2xx":0}'
  local reqs errors non2xx
  reqs=$(json_get "$json" requests); errors=$(json_get "$json" errors); non2xx=$(json_get "$json" non_2xx)
  # The CPU delta covers the warm-up as well, paced at the same rate.
  [ -z "${PROXY_PID[$target]}" ] || cpu=$(per_unit "$D_PROXY_NS" $((reqs + rate * WARMUP)))
  if [ "$reqs" = 0 ]; then INVALID="no request completed ($(tail -n1 "$out.err" 2>/dev/null))"
  elif [ "$errors" != 0 ]; then INVALID="$errors errors"
  elif [ "$non2xx" != 0 ]; then INVALID="$non2xx non-2xx answers"
  fi
  ROW=$(printf '"rate":%s,"cpu_us":%s,"latbench":%s' "$rate" "$cpu" "$json")
  SUMMARY="$(json_get "$json" rate_achieved)/s, p50 $(json_get "$json" p50_us) µs, p99 $(json_get "$json" p99_us) µs, p99.9 $(json_get "$json" p999_us) µs"
}

# ---------------------------------------------------------------------------- 3: sse
# sse_once TARGET REP ATTEMPT: ssebench, SSE_STREAMS concurrent streams of the origin's /sse
# (an event every SSE_INTERVAL_MS with its send time): per-event delay, time to first event.
sse_once() {
  local target=$1 out=$RUN_DIR/sse-$1-$2-$3.json json events failed cpu=null
  run_load "${PIN_LOAD[@]}" "$BIN/ssebench" --url "${BASE[$target]}/sse?events=$SSE_EVENTS&interval_ms=$SSE_INTERVAL_MS" \
    --streams "$SSE_STREAMS" --events "$SSE_EVENTS" --ramp-ms "$SSE_INTERVAL_MS" --timeout-seconds 120 \
    >"$out" 2>"$out.err" || true
  settle "${PROXY_PID[$target]}"
  json=$(head -n1 "$out")
  [ -n "$json" ] || json='{"events":0,"streams_ok":0,"streams_failed":'"$SSE_STREAMS"',"errors":{"ssebench printed nothing":1}}'
  events=$(json_get "$json" events)
  failed=$(json_get "$json" streams_failed)
  [ -z "${PROXY_PID[$target]}" ] || cpu=$(per_unit "$D_PROXY_NS" "$events")
  [ "$failed" = 0 ] || INVALID="$failed failed streams"
  ROW=$(printf '"cpu_us_per_event":%s,"ssebench":%s' "$cpu" "$json")
  SUMMARY=$(printf '%s' "$json" | python3 -c '
import json, sys
j = json.load(sys.stdin)
d, f = j.get("delay_us") or {}, j.get("first_event_ms") or {}
print("%s events, %s failed streams, delay p50 %s µs p99 %s µs, first event p50 %s ms"
      % (j.get("events"), j.get("streams_failed"), d.get("p50"), d.get("p99"), f.get("p50")))')
  SUMMARY+=", proxy CPU $cpu µs/event"
}

# ---------------------------------------------------------------------------- 4: rss
# proxy_pids PID: the pid and its children's (nginx's master and worker).
proxy_pids() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }

# rss_run TARGET MODE: a fresh proxy (memory that earlier load freed would be reused and
# hide the cost), then connbench opens RSS_HTTP_CONNS idle keep-alive connections (mode
# http) or RSS_WS_CONNS WebSockets (ws) and reads the proxy's RSS as they open.
rss_run() {
  local target=$1 mode=$2 name=rss-$1-$2 url n out json pidargs=() p
  start_proxy "$target" "$name"
  local pid=$STARTED_PID
  if [ "$mode" = http ]; then url=$STARTED_URL$ORIGIN_PATH; n=$RSS_HTTP_CONNS
  else url=ws://${STARTED_URL#http://}/ws; n=$RSS_WS_CONNS
  fi
  for p in $(proxy_pids "$pid"); do pidargs+=(--pid "$p"); done
  out=$RUN_DIR/$name.json
  run_load "${PIN_LOAD[@]}" "$BIN/connbench" --mode "$mode" --url "$url" --connections "$n" \
    "${pidargs[@]}" --step "$RSS_STEP" >"$out" 2>"$out.err" || true
  stop "$pid"
  json=$(head -n1 "$out")
  local valid=true
  if [ -z "$json" ]; then
    valid=false
    json=$(python3 -c 'import json, sys; print(json.dumps({"error": sys.argv[1]}))' "$(tail -n1 "$out.err" 2>/dev/null)")
  elif [ "$(json_get "$json" failed)" != 0 ]; then
    valid=false
  fi
  printf '{"scenario":"rss","target":"%s","mode":"%s","rep":1,"attempt":0,"kept":true,"valid":%s,"noisy":false,"connbench":%s}\n' \
    "$target" "$mode" "$valid" "$json" >>"$RESULTS"
  log "rss $target $mode: $(json_get "$json" kib_per_connection) KiB per connection over $n ($(json_get "$json" failed) failed)"
}

# rss_all: scenario 4 for every proxy, HTTP then WebSocket.
rss_all() {
  local t
  for t in "${RSS_TARGETS[@]}"; do
    available "$t" || continue
    rss_run "$t" http
    rss_run "$t" ws
  done
}

# ---------------------------------------------------------------------------- 5: ws
# ws_url TARGET: the origin's WebSocket echo through TARGET.
ws_url() { echo "ws://${BASE[$1]#http://}/ws"; }

# ws_warm TARGET: a 1 s echo run before the measured one.
ws_warm() {
  run_load "${PIN_LOAD[@]}" "$BIN/wsbench" echo --url "$(ws_url "$1")" --connections "$WS_CONNS" \
    --seconds 1 --warmup-seconds 0 --size "$WS_SIZE" >/dev/null 2>&1 || true
}

# ws_once TARGET REP ATTEMPT: wsbench echo, WS_CONNS sessions sending WS_SIZE-byte binary
# messages back to back and waiting for each echo: messages/s, round trip, CPU per message.
ws_once() {
  local target=$1 out=$RUN_DIR/ws-$1-$2-$3.json json msgs cpu=null
  run_load "${PIN_LOAD[@]}" "$BIN/wsbench" echo --url "$(ws_url "$target")" --connections "$WS_CONNS" \
    --seconds "$WS_SECONDS" --warmup-seconds 0 --size "$WS_SIZE" >"$out" 2>"$out.err" || true
  settle "${PROXY_PID[$target]}"
  json=$(head -n1 "$out")
  [ -n "$json" ] || json='{"messages":0}'
  msgs=$(json_get "$json" messages)
  [ -z "${PROXY_PID[$target]}" ] || cpu=$(per_unit "$D_PROXY_NS" "$msgs")
  [ "$msgs" != 0 ] || INVALID="no message echoed ($(tail -n1 "$out.err" 2>/dev/null))"
  ROW=$(printf '"cpu_us":%s,"wsbench":%s' "$cpu" "$json")
  SUMMARY="$(json_get "$json" messages_per_s) messages/s, proxy CPU $cpu µs/message"
}

# ---------------------------------------------------------------------------- 6: h2
# h2_args TARGET SECONDS: h2load's arguments for the JSON POST over h2c prior knowledge.
h2_args() {
  echo "-t1 -c$H2_CONNS -m$H2_STREAMS -D $2 -d $RUN_DIR/post.json -H content-type:application/json ${H2_BASE[$1]}$POST_PATH"
}

# h2_warm TARGET: a short h2load run before the measured one.
h2_warm() {
  # shellcheck disable=SC2046 # h2_args is split on purpose (no spaces inside its words)
  run_load "${PIN_LOAD[@]}" h2load $(h2_args "$1" "$WARMUP") >/dev/null 2>&1 || true
}

# h2_once TARGET REP ATTEMPT: h2load, H2_CONNS connections x H2_STREAMS concurrent streams:
# requests/s, mean request time and proxy CPU per request.
h2_once() {
  local target=$1 out=$RUN_DIR/h2-$1-$2-$3.txt cpu=null
  # shellcheck disable=SC2046
  run_load "${PIN_LOAD[@]}" h2load $(h2_args "$target" "$H2_SECONDS") >"$out" 2>&1 || true
  settle "${PROXY_PID[$target]}"
  local fields
  fields=$(awk '
    /^finished in/ { gsub(/,/, ""); rps = $4 }
    /^requests:/ { n = $6; failed = $10; errored = $12 }
    /^status codes:/ { other = $5 + $7 + $9 }
    /^time for request:/ { mean = $6 }
    END { printf "%s %s %s %s %s %s", rps + 0, n + 0, failed + 0, errored + 0, other + 0, mean }' "$out")
  local rps n failed errored other mean
  read -r rps n failed errored other mean <<<"$fields"
  [ -z "${PROXY_PID[$target]}" ] || cpu=$(per_unit "$D_PROXY_NS" "$n")
  # With -D, requests still in flight when the time is up count as failed: at most one per
  # open stream is expected.
  if [ "$n" = 0 ]; then INVALID="no request completed ($(grep -m1 -iE 'error|fail|refused' "$out"))"
  elif [ "$failed" -gt $((H2_CONNS * H2_STREAMS)) ] || [ "$errored" != 0 ]; then INVALID="$failed failed, $errored errored"
  elif [ "$other" != 0 ]; then INVALID="$other non-2xx answers"
  fi
  ROW=$(printf '"rps":%s,"requests":%s,"mean_request":"%s","cpu_us":%s' "$rps" "$n" "$mean" "$cpu")
  SUMMARY="$rps req/s, mean $mean, proxy CPU $cpu µs/req"
}

# ---------------------------------------------------------------------------- self-contained
# scale_scenario: scenario 9, scalebench (cold starts and a burst; its own Portico and
# workers); writes docs/benchmarks-scaling.md and its plot.
scale_scenario() {
  log "scenario scale: $SCALE_ROUNDS cold starts, $SCALE_BURSTS bursts"
  run_load "$BIN/scalebench" --portico "$BIN/portico" --fakeworker "$BIN/fakeworker" \
    --rounds "$SCALE_ROUNDS" --bursts "$SCALE_BURSTS" --burst-seconds "$SCALE_BURST_SECONDS" \
    --run-dir "$RUN_DIR/scale" --out "$SCALE_OUT" --svg "$(dirname "$SCALE_OUT")/img/scaling-burst.svg" \
    --source "$GIT_REV" --toolchain "$RUSTC_VERSION" >"$RUN_DIR/scale.json" || die "scalebench failed (its log is above)"
  log "scale: $(cat "$RUN_DIR/scale.json")"
}

# async_scenario: scenario 7, asyncbench (durable intake; its own Portico, fakeworker and
# redis-server); writes docs/benchmarks-async.md.
async_scenario() {
  log "scenario async: $ASYNC_REPS repetitions of $ASYNC_PHASES"
  local keep=()
  [ "${BENCH_KEEP:-0}" != 1 ] || keep=(--keep)
  run_load "$BIN/asyncbench" --portico "$BIN/portico" --fakeworker "$BIN/fakeworker" \
    --phases "$ASYNC_PHASES" --reps "$ASYNC_REPS" --seconds "$ASYNC_SECONDS" --clients "$ASYNC_CLIENTS" \
    --e2e-jobs "$ASYNC_E2E_JOBS" --threads "$PORTICO_THREADS" --drain-seconds "$ASYNC_DRAIN_SECONDS" \
    --extra-threads "$ASYNC_EXTRA_THREADS" --noise-pct "$NOISE_PCT" \
    --quiet-wait-seconds "$QUIET_WAIT" --run-dir "$RUN_DIR/async" "${keep[@]}" \
    --out "$ASYNC_OUT" --source "$GIT_REV" --toolchain "$RUSTC_VERSION" \
    >"$RUN_DIR/async.json" || die "asyncbench failed (its log is above)"
  log "async: $(cat "$RUN_DIR/async.json")"
}

# ipfilter_scenario: scenario 8, a short criterion run of lookups at 100,000 rules; the
# median time per lookup goes to $RUN_DIR/ipfilter.json.
ipfilter_scenario() {
  log "scenario ipfilter: criterion lookup/100000 (${IPF_SECONDS}s measured)"
  local tdir est
  tdir=$TARGET_DIR/criterion/lookup/100000/new
  rm -rf "$tdir"
  run_load cargo bench -q -p ipfilter --bench lookup -- --warm-up-time 1 --measurement-time "$IPF_SECONDS" \
    --noplot '^lookup/100000$' >"$RUN_DIR/ipfilter.txt" 2>"$RUN_DIR/ipfilter.err" ||
    { tail -n 20 "$RUN_DIR/ipfilter.err" >&2; die "cargo bench -p ipfilter failed"; }
  est=$tdir/estimates.json
  [ -f "$est" ] || die "no criterion estimates at $est"
  python3 - "$est" "$RUN_DIR/ipfilter.txt" >"$RUN_DIR/ipfilter.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
probes = 4096  # lookups per criterion iteration (ipfilter/benches/lookup.rs PROBES)
m = e["median"]
print(json.dumps({
    "ns_per_lookup": m["point_estimate"] / probes,
    "ci_low": m["confidence_interval"]["lower_bound"] / probes,
    "ci_high": m["confidence_interval"]["upper_bound"] / probes,
    "criterion": open(sys.argv[2]).read().strip(),
}))
PY
  log "ipfilter: $(json_get "$(cat "$RUN_DIR/ipfilter.json")" ns_per_lookup) ns per lookup at 100,000 rules"
}
