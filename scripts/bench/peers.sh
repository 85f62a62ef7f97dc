# shellcheck shell=bash disable=SC2034 # BASE, PROXY_PID and H2_BASE are read by scenarios.sh
# scripts/bench/peers.sh — sourced by scripts/bench.sh: installs the peers and load tools from
# Debian, and starts the origin, Portico, nginx (bare, and in scenario 1 also doing Portico's
# per-request work), HAProxy and the hyper floor.

# nginx_bin / haproxy_bin: the installed binary, empty when missing.
nginx_bin() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
haproxy_bin() { command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true; }

# install_missing: installs from Debian what the scenarios asked for need and is not there.
install_missing() {
  local missing=()
  if needs_peers; then
    [ -n "$(nginx_bin)" ] || missing+=(nginx)
    [ -n "$(haproxy_bin)" ] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
  fi
  ! wants h2 || command -v h2load >/dev/null || missing+=(nghttp2-client)
  # asyncbench leaves the Redis rows out without it, but they are half the point.
  ! wants async || command -v redis-server >/dev/null || missing+=(redis-server)
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
  # The packages' own services (nginx on port 80, HAProxy, Redis on 6379) are not ours and
  # not wanted during a benchmark.
  if command -v service >/dev/null; then
    for m in nginx haproxy redis-server; do
      if [[ " ${missing[*]} " == *" $m "* ]]; then "${sudo[@]}" service "$m" stop >/dev/null 2>&1 || true; fi
    done
  fi
}

# start_origin PORT: fakeworker, access log off (RUST_LOG=warn), no request recording, on
# CPU 0; sets ORIGIN_PID, ORIGIN_PORT, ORIGIN.
ORIGIN_STARTS=0
start_origin() {
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

# start_portico NAME THREADS PIN...: a Portico from bench/configs/portico.toml.template with
# its files in $RUN_DIR/NAME; sets STARTED_PID and STARTED_URL (the endpoint's base URL).
start_portico() {
  local name=$1 threads=$2 line
  shift 2
  mkdir -p "$RUN_DIR/$name"
  fill_template bench/configs/portico.toml.template "$RUN_DIR/$name.toml" \
    "DIR=$RUN_DIR/$name" "WORKER_THREADS=$threads"
  "$BIN/portico" validate --config "$RUN_DIR/$name.toml" >&2 || die "the generated Portico config is invalid"
  start "$name" "$@" -- "$BIN/portico" run --config "$RUN_DIR/$name.toml"
  STARTED_PID=$LAST_PID
  wait_line "$STARTED_PID" "$RUN_DIR/$name.out" '^listening on admin ' >/dev/null || die "Portico ($name) did not start"
  line=$(grep -m1 '^listening on bench ' "$RUN_DIR/$name.out") || die "no 'listening on bench' line from Portico ($name)"
  STARTED_URL=http://${line#listening on bench }$PORTICO_PREFIX
  # Its first health probe of the origin may take a moment.
  wait_http "$STARTED_URL$ORIGIN_PATH" || log "WARNING: Portico ($name) answers $(http_code "$STARTED_URL$ORIGIN_PATH") on $PORTICO_PREFIX$ORIGIN_PATH"
  log "$name: Portico pid $STARTED_PID ($threads worker threads) on $STARTED_URL"
}

# start_nginx NAME [TEMPLATE]: nginx from TEMPLATE (bench/peers/nginx.conf.template, the bare
# proxy, by default), pinned like every proxy, in $RUN_DIR/NAME; sets STARTED_PID, STARTED_URL
# and STARTED_H2_URL.
start_nginx() {
  local name=$1 template=${2:-bench/peers/nginx.conf.template} dir=$RUN_DIR/$1 port h2port
  port=$(free_port); h2port=$(free_port)
  mkdir -p "$dir"
  fill_template "$template" "$dir/nginx.conf" "DIR=$dir" "PORT=$port" "H2_PORT=$h2port" \
    "NOFILE=$(ulimit -n)"
  "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "the generated nginx config is invalid"
  start "$name" "${PIN_PROXY[@]}" -- "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
  STARTED_PID=$LAST_PID
  STARTED_URL=http://127.0.0.1:$port
  STARTED_H2_URL=http://127.0.0.1:$h2port
  wait_http "$STARTED_URL$ORIGIN_PATH" || die "nginx does not proxy (see $dir/error.log)"
  log "$name: nginx pid $STARTED_PID on $STARTED_URL (h2c on $h2port)"
}

# start_haproxy NAME: HAProxy from bench/peers/haproxy.cfg.template, pinned like every proxy,
# in $RUN_DIR/NAME; sets STARTED_PID and STARTED_URL.
start_haproxy() {
  local name=$1 dir=$RUN_DIR/$1 port
  port=$(free_port)
  mkdir -p "$dir"
  fill_template bench/peers/haproxy.cfg.template "$dir/haproxy.cfg" "DIR=$dir" "PORT=$port" "NOFILE=$(ulimit -n)"
  "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >&2 || die "the generated HAProxy config is invalid"
  start "$name" "${PIN_PROXY[@]}" -- "$HAPROXY" -db -f "$dir/haproxy.cfg"
  STARTED_PID=$LAST_PID
  STARTED_URL=http://127.0.0.1:$port
  wait_http "$STARTED_URL$ORIGIN_PATH" || die "HAProxy does not proxy (see $RUN_DIR/$name.err)"
  log "$name: HAProxy pid $STARTED_PID on $STARTED_URL"
}

# start_floor NAME: refproxy (bench/src/bin/refproxy.rs), the per-core hyper design of
# shared/PERFORMANCE.md with nothing else; sets STARTED_PID and STARTED_URL.
start_floor() {
  local line
  start "$1" "${PIN_PROXY[@]}" -- "$BIN/refproxy" --upstream "127.0.0.1:$ORIGIN_PORT"
  STARTED_PID=$LAST_PID
  line=$(wait_line "$STARTED_PID" "$RUN_DIR/$1.out" '^listening on ') || die "refproxy did not start"
  STARTED_URL=http://${line#listening on }
  log "$1: refproxy pid $STARTED_PID on $STARTED_URL"
}

# start_proxy TARGET NAME: starts one proxy of a target under NAME (STARTED_PID, STARTED_URL).
start_proxy() {
  case $1 in
    portico) start_portico "$2" "$PORTICO_THREADS" "${PIN_PROXY[@]}" ;;
    # Two data-plane threads on one pinned CPU would only take turns: unpinned, the second
    # Portico may use both CPUs (sharing CPU 0 with origin and load).
    portico2) start_portico "$2" 2 ;;
    nginx) start_nginx "$2" ;;
    # nginx doing Portico's per-request work: JSON access log to a file, forwarding headers,
    # request id (scenario 1 only).
    nginx_work) start_nginx "$2" bench/peers/nginx-same-work.conf.template ;;
    haproxy) start_haproxy "$2" ;;
    floor) start_floor "$2" ;;
    *) die "no proxy called $1" ;;
  esac
}

# start_peers: the origin and every proxy the scenarios use; fills BASE, PROXY_PID and H2_BASE
# (the h2c base URL, used by scenarios.sh).
declare -A BASE PROXY_PID H2_BASE
start_peers() {
  start_origin 0
  BASE[direct]=$ORIGIN
  PROXY_PID[direct]=""
  H2_BASE[direct]=$ORIGIN
  local t
  for t in portico portico2 nginx nginx_work haproxy floor; do
    # The second Portico and nginx doing Portico's work are measured in scenario 1 only.
    case $t in portico2|nginx_work) wants http || continue ;; esac
    start_proxy "$t" "$t"
    BASE[$t]=$STARTED_URL
    PROXY_PID[$t]=$STARTED_PID
    H2_BASE[$t]=$STARTED_URL
    case $t in nginx|nginx_work) H2_BASE[$t]=$STARTED_H2_URL ;; esac
  done
  PORTICO_STATUS=$(http_code "${BASE[portico]}$ORIGIN_PATH")
  if [ "$PORTICO_STATUS" = 200 ]; then
    PORTICO_NOTE=""
  else
    PORTICO_NOTE="Portico answered HTTP $PORTICO_STATUS on GET $PORTICO_PREFIX$ORIGIN_PATH (expected 200 from the origin)"
    log "NOTE: $PORTICO_NOTE; the Portico rows are reported as not available"
  fi
}

# available TARGET: whether the target can be measured (Portico's data plane answered).
available() { case $1 in portico|portico2) [ "$PORTICO_STATUS" = 200 ] ;; *) return 0 ;; esac; }

# check_alive TARGET: before a run, restarts the origin on its port if it died (this machine
# is shared; a stray `pkill fakeworker` has been seen); a dead proxy ends the benchmark.
ORIGIN_RESTARTS=0
check_alive() {
  local status=0 t
  if ! kill -0 "$ORIGIN_PID" 2>/dev/null; then
    wait "$ORIGIN_PID" 2>/dev/null || status=$?
    log "WARNING: the origin (pid $ORIGIN_PID) died (exit status $status, 137 = SIGKILL, 143 = SIGTERM); restarting it on port $ORIGIN_PORT"
    ORIGIN_RESTARTS=$((ORIGIN_RESTARTS + 1))
    stop "$ORIGIN_PID"
    start_origin "$ORIGIN_PORT"
    # The proxies may have marked the worker down meanwhile: wait until every path answers.
    for t in "${!BASE[@]}"; do
      if available "$t"; then wait_http "${BASE[$t]}$ORIGIN_PATH" || true; fi
    done
  fi
  local pid=${PROXY_PID[$1]:-}
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || status=$?
    tail -n 20 "$RUN_DIR/$1.err" >&2 || true
    die "$1 (pid $pid) died (exit status $status); its stderr is above"
  fi
}
