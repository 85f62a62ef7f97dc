"""scripts/bench/report.py — writes docs/benchmarks.md from a scripts/bench.sh run.

Run by scripts/bench.sh with its settings in the environment. Input: $RESULTS (one JSON line
per measured try), $TIMINGS (`step seconds` lines), the JSON summaries of the self-contained
scenarios in $RUN_DIR, and the previous report: sections of scenarios not run this time are
kept from it, with their data (a JSON comment inside each section, which the targets table is
computed from), and so is the hand-written Optimisations section, verbatim. Also draws the
SVG plots with `benchplot` when it is built.
"""

import json
import os
import re
import statistics
import subprocess
import time

env = os.environ
rows = [json.loads(line) for line in open(env["RESULTS"]) if line.strip()]
# Used for the figures: the last try of each run, unless it was invalid (errors, failed streams).
kept = [r for r in rows if r["kept"] and r["valid"]]
timings = {}
for line in open(env["TIMINGS"]):
    name, secs = line.split()
    timings[name] = int(secs)
ran = env["SCENARIOS_RUN"].split()
run_dir = env["RUN_DIR"]
old = open(env["OUT"]).read() if os.path.exists(env["OUT"]) else ""

NAMES = {
    "direct": "direct (no proxy)",
    "portico": "Portico, 1 thread",
    "portico2": "Portico, 2 threads (unpinned)",
    "nginx": "nginx",
    "nginx_work": "nginx, same work (JSON access log, forwarding headers, request id)",
    "haproxy": "HAProxy",
    "floor": "hyper floor (refproxy)",
}
ORDER = ["portico", "portico2", "nginx", "nginx_work", "haproxy", "floor", "direct"]
# The peers of the "better peer" ratios: the plain proxies. nginx_work (scenario 1 only) is
# nginx doing Portico's per-request work, the like-for-like comparison, not a peer.
PEERS = ["nginx", "haproxy"]


# ---------------------------------------------------------------------------- helpers
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def rng(xs, digits=1):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0], digits)
    return f"{fmt(med(xs), digits)} ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fx(r):
    return "—" if r is None else f"{r:.2f}×"


def by_target(scenario, **match):
    out = {}
    for r in kept:
        if r["scenario"] == scenario and all(r.get(k) == v for k, v in match.items()):
            out.setdefault(r["target"], []).append(r)
    return out


def not_available(target):
    return target.startswith("portico") and env.get("PORTICO_STATUS") != "200"


def verdict(r):
    if not r["kept"]:
        return "discarded"
    if not r["valid"]:
        return "invalid"
    return "kept, noisy" if r["noisy"] else "kept"


def table(header, body):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in body
    ]


def raw_table(scenario, header, cells):
    body = [cells(r) for r in rows if r["scenario"] == scenario]
    return ["<details><summary>Every run (discarded ones included)</summary>", ""] + table(
        header, body
    ) + ["", "</details>"]


def discard_line(scenario):
    runs = [r for r in rows if r["scenario"] == scenario]
    noisy = sum(1 for r in runs if not r["kept"] and r["valid"])
    broken = sum(1 for r in runs if not r["kept"] and not r["valid"])
    flagged = sum(1 for r in runs if r["kept"] and r["valid"] and r["noisy"])
    invalid = sum(1 for r in runs if r["kept"] and not r["valid"])
    line = f"Runs discarded and repeated: **{noisy}** of {len(runs)} for other load above {env['NOISE_PCT']}% of one core"
    if broken:
        line += f", {broken} for errors"
    if flagged:
        line += f"; {flagged} kept although noisy (still noisy after {env['MAX_RETRIES']} repeats)"
    if invalid:
        line += f"; **{invalid} runs left out: still failing after {env['MAX_RETRIES']} repeats**"
    if env.get("ORIGIN_RESTARTS", "0") not in ("", "0"):
        line += f"; the origin died and was restarted {env['ORIGIN_RESTARTS']} times during the whole benchmark"
    return line + "."


def measured(scenario):
    return f"Measured {env['START_TIME']} at `{env['GIT_REV']}` in {timings.get(scenario, '?')} s"


def read_json(name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return None
    text = open(path).read().strip()
    return json.loads(text.splitlines()[-1]) if text else None


def plot(kind, lines, out, title):
    """Draws an SVG with benchplot; returns a Markdown image or a note."""
    exe = os.path.join(env["BIN"], "benchplot")
    if not os.path.exists(exe):
        return f"(No plot: `benchplot` is not built.)"
    src = os.path.join(run_dir, os.path.basename(out) + ".jsonl")
    with open(src, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    res = subprocess.run([exe, kind, "--input", src, "--out", out, "--title", title],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return f"(No plot: benchplot failed: {res.stderr.strip()[-200:]})"
    rel = os.path.relpath(out, os.path.dirname(env["OUT"]))
    return f"![{title}]({rel})"


# ---------------------------------------------------------------------------- 1: http
def http_section():
    t = by_target("http")
    cpu = {k: med(r["cpu_us"] for r in v) for k, v in t.items()}
    norm = {k: med(r["cpu_us"] / r["wrk_cpu_us"] for r in v if r["cpu_us"] and r["wrk_cpu_us"])
            for k, v in t.items()}
    peer_cpu = {p: cpu.get(p) for p in PEERS if cpu.get(p)}
    best = min(peer_cpu, key=peer_cpu.get) if peer_cpu else None
    best_norm = norm.get(best) if best else None
    lines = [
        "## Scenario 1: small JSON POST over 32 keep-alive connections",
        "",
        f"{measured('http')}: `wrk -t1 -c{env['CONNS']} -d{env['SECS']}s --latency -s post.lua` "
        f"(after a {env['WARMUP']} s warm-up), `POST {env['POST_PATH']}` with "
        f"`{env['POST_BODY']}` answered 200 by the origin, {env['REPS']} interleaved repetitions "
        "per path. Median (min–max) over the repetitions. Proxy CPU is the proxy's CPU time (all "
        "threads and processes) during the run divided by the requests wrk completed; "
        "÷ wrk divides it by wrk's own CPU per request in the same run, which cancels the "
        f"machine's drift. Ratios are against the better peer of the run (**{NAMES.get(best, '—')}**) "
        "and against the hyper floor. The 2-thread Portico runs unpinned (see Setup), so its "
        "figures are not a per-core comparison. *nginx, same work* is the bare nginx plus what "
        "Portico does on every request (a buffered JSON access-log line written to a file, "
        "`X-Forwarded-*` and `Forwarded` headers, an `X-Request-Id` to the origin and on the "
        "answer; [its config](../bench/peers/nginx-same-work.conf.template)): Portico against it "
        "is the like-for-like comparison; it is never the better peer.",
        "",
    ]
    body = []
    for target in ORDER:
        if not_available(target):
            body.append([NAMES[target], "not available"] + [""] * 8)
            continue
        rs = t.get(target, [])
        if not rs:
            continue
        proxy = target != "direct"
        body.append([
            NAMES[target], rng([r["rps"] for r in rs], 0), fmt(med(r["p50_ms"] for r in rs), 3),
            rng([r["p99_ms"] for r in rs], 3), rng([r["cpu_us"] for r in rs], 1) if proxy else "—",
            fx(ratio(cpu.get(target), cpu.get(best))) if proxy else "—",
            fx(ratio(cpu.get(target), cpu.get("floor"))) if proxy else "—",
            rng([r["cpu_us"] / r["wrk_cpu_us"] for r in rs if r["cpu_us"] and r["wrk_cpu_us"]], 2) if proxy else "—",
            fx(ratio(norm.get(target), best_norm)) if proxy else "—",
            rng([r["origin_cpu_us"] for r in rs], 1),
        ])
    lines += table(["path", "requests/s", "p50 ms", "p99 ms", "proxy CPU µs/request",
                    "vs better peer", "vs floor", "proxy CPU ÷ wrk CPU", "that vs better peer",
                    "origin CPU µs/request"], body)
    lines += ["", discard_line("http"), ""]
    lines += raw_table(
        "http",
        ["path", "rep", "try", "kept", "req/s", "p50 ms", "p99 ms", "proxy CPU µs/req",
         "origin CPU µs/req", "wrk CPU µs/req", "other load % of a core", "non-2xx", "socket errors"],
        lambda r: [NAMES[r["target"]], r["rep"], r["attempt"], verdict(r), fmt(r["rps"], 0),
                   r["p50_ms"], r["p99_ms"], fmt(r["cpu_us"], 2), fmt(r["origin_cpu_us"], 2),
                   fmt(r.get("wrk_cpu_us"), 2), r["other_pct"], r["non2xx"], r["socket_errors"]],
    )
    data = {"cpu": cpu, "norm": norm, "best_peer": best}
    return lines, data


# ---------------------------------------------------------------------------- 2: latency
PCTS = [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")]


def latency_section():
    rates = [int(x) for x in env["LAT_RATES"].split()]
    lines = [
        "## Scenario 2: added latency at 1 connection, fixed open-loop rates",
        "",
        f"{measured('latency')}: `latbench --connections 1 --rate R --seconds {env['LAT_SECONDS']} "
        f"--warmup-seconds {env['WARMUP']} --method POST` with the request of scenario 1, at "
        f"R = {', '.join(map(str, rates))} requests/s, {env['LAT_REPS']} interleaved repetitions "
        "per path and rate. Requests are sent on a fixed schedule whatever the answers do (open "
        "loop) and each latency runs from the request's scheduled send time, so a stall counts "
        "for every request it delays (latency correction, as wrk2 and `oha --latency-correction`). "
        "Percentiles per repetition, median over repetitions; added = path − direct. Proxy CPU "
        "per request counts the warm-up's requests too (rate × warm-up seconds).",
        "",
    ]
    data = {"added": {}}
    for rate in rates:
        t = by_target("latency", rate=rate)
        pct = {k: {name: med(r["latbench"].get(key) for r in v) for name, key in PCTS} for k, v in t.items()}
        d = pct.get("direct", {})
        added = {k: {n: (v[n] - d[n]) if v.get(n) is not None and d.get(n) is not None else None
                     for n, _ in PCTS} for k, v in pct.items() if k != "direct"}
        data["added"][str(rate)] = added
        body = []
        for target in ORDER:
            rs = t.get(target, [])
            if not rs:
                continue
            a = added.get(target, {})
            body.append([NAMES[target], fmt(med(r["latbench"].get("rate_achieved") for r in rs), 0)]
                        + [fmt(pct[target][n], 0) for n, _ in PCTS]
                        + ([fmt(a.get(n), 0) for n, _ in PCTS] if target != "direct" else ["—"] * 3)
                        + [fx(ratio(a.get("p50"), added.get("nginx", {}).get("p50"))) if target != "direct" else "—",
                           rng([r["cpu_us"] for r in rs], 1) if target != "direct" else "—"])
        lines += [f"**{rate} requests/s**", ""]
        lines += table(["path", "achieved/s", "p50 µs", "p99 µs", "p99.9 µs", "added p50 µs",
                        "added p99 µs", "added p99.9 µs", "added p50 vs nginx", "proxy CPU µs/request"], body)
        img = plot("latency", [{"path": NAMES[k], "percentiles": percentiles_of(v)}
                               for k in ORDER for v in [t.get(k)] if v],
                   os.path.join(env["IMG"], f"bench-latency-{rate}.svg"),
                   f"Latency at 1 connection, {rate} requests/s (open loop, corrected)")
        lines += ["", img, ""]
    lines += [discard_line("latency"), ""]
    lines += raw_table(
        "latency",
        ["path", "rate", "rep", "try", "kept", "achieved/s", "p50 µs", "p90 µs", "p99 µs",
         "p99.9 µs", "max µs", "errors", "non-2xx", "proxy CPU µs/req", "other load % of a core"],
        lambda r: [NAMES[r["target"]], r["rate"], r["rep"], r["attempt"], verdict(r),
                   fmt(r["latbench"].get("rate_achieved"), 0),
                   *(r["latbench"].get(k) for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us",
                                                    "errors", "non_2xx")),
                   fmt(r["cpu_us"], 2), r["other_pct"]],
    )
    return lines, data


def percentiles_of(rs):
    """Median latency at each percentile over the repetitions."""
    by_p = {}
    for r in rs:
        for p, us in r["latbench"].get("percentiles") or []:
            by_p.setdefault(p, []).append(us)
    return [[p, med(v)] for p, v in sorted(by_p.items())]


# ---------------------------------------------------------------------------- 3: sse
def sse_section():
    t = by_target("sse")

    def stat(rs, *keys):
        out = []
        for r in rs:
            v = r["ssebench"]
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            out.append(v)
        return out

    direct = t.get("direct", [])
    d50, d99 = med(stat(direct, "delay_us", "p50")), med(stat(direct, "delay_us", "p99"))
    dfirst = med(stat(direct, "first_event_ms", "p50"))
    lines = [
        f"## Scenario 3: SSE, {int(env['SSE_STREAMS']):,} concurrent streams",
        "",
        f"{measured('sse')}: `ssebench --streams {env['SSE_STREAMS']} --events {env['SSE_EVENTS']} "
        f"--ramp-ms {env['SSE_INTERVAL_MS']}` on the origin's `GET /sse?events={env['SSE_EVENTS']}"
        f"&interval_ms={env['SSE_INTERVAL_MS']}` (an event every {env['SSE_INTERVAL_MS']} ms carrying "
        f"its send time), one connection per stream, {env['SSE_REPS']} interleaved repetitions per "
        "path. Delay = receive time − the event's `sent_at_us` (same clock); percentiles over all "
        "events of a repetition, median over repetitions. Added = proxy − direct. Origin and "
        "ssebench share CPU 0 while the proxy has CPU 1, so an added delay within a few tens of µs "
        "of 0 (either sign) is noise.",
        "",
    ]
    data = {"added_p50_us": {}, "added_p99_us": {}, "added_first_ms": {}}
    # How far the direct path's own p99 moved between repetitions: an added p99 smaller than
    # that cannot be told from the load generator's noise.
    direct_p99s = [v for v in stat(direct, "delay_us", "p99") if v is not None]
    if direct_p99s:
        data["direct_p99_spread_us"] = max(direct_p99s) - min(direct_p99s)
    body = []
    for target in ORDER:
        rs = t.get(target, [])
        if not rs:
            continue
        p50, p99 = med(stat(rs, "delay_us", "p50")), med(stat(rs, "delay_us", "p99"))
        first = med(stat(rs, "first_event_ms", "p50"))
        proxy = target != "direct"
        a50 = p50 - d50 if proxy and None not in (p50, d50) else None
        a99 = p99 - d99 if proxy and None not in (p99, d99) else None
        afirst = first - dfirst if proxy and None not in (first, dfirst) else None
        if proxy:
            data["added_p50_us"][target], data["added_p99_us"][target] = a50, a99
            data["added_first_ms"][target] = afirst
        body.append([NAMES[target], fmt(med(stat(rs, "events")), 0),
                     sum(x or 0 for x in stat(rs, "streams_failed")), fmt(p50, 0),
                     rng(stat(rs, "delay_us", "p99"), 0), fmt(med(stat(rs, "delay_us", "max")), 0),
                     fmt(first, 3), fmt(med(stat(rs, "first_event_ms", "p99")), 3),
                     fmt(a50, 0) if proxy else "—", fmt(a99, 0) if proxy else "—",
                     fmt(afirst, 3) if proxy else "—",
                     rng([r["cpu_us_per_event"] for r in rs], 1) if proxy else "—"])
    lines += table(["path", "events/run", "failed streams", "delay p50 µs", "delay p99 µs",
                    "delay max µs", "first event p50 ms", "first event p99 ms", "added p50 µs",
                    "added p99 µs", "added first event p50 ms", "proxy CPU µs/event"], body)
    lines += ["", discard_line("sse"), ""]
    lines += raw_table(
        "sse",
        ["path", "rep", "try", "kept", "events", "failed streams", "delay p50 µs", "p90 µs",
         "p99 µs", "max µs", "first event p50 ms", "p99 ms", "proxy CPU µs/event", "other load % of a core"],
        lambda r: [NAMES[r["target"]], r["rep"], r["attempt"], verdict(r), r["ssebench"].get("events"),
                   r["ssebench"].get("streams_failed"),
                   *((r["ssebench"].get("delay_us") or {}).get(k) for k in ("p50", "p90", "p99", "max")),
                   *((r["ssebench"].get("first_event_ms") or {}).get(k) for k in ("p50", "p99")),
                   fmt(r["cpu_us_per_event"], 2), r["other_pct"]],
    )
    return lines, data


# ---------------------------------------------------------------------------- 4: rss
def rss_section():
    rs = [r for r in rows if r["scenario"] == "rss"]
    lines = [
        "## Scenario 4: memory per connection",
        "",
        f"{measured('rss')}: for each proxy a fresh instance (memory freed by earlier load would "
        "be reused and hide the cost), then `connbench --mode http --connections "
        f"{env['RSS_HTTP_CONNS']}` (each connection sends one `GET {env['ORIGIN_PATH']}`, reads "
        "the answer and stays open, idle) and, on another fresh instance, `connbench --mode ws "
        f"--connections {env['RSS_WS_CONNS']}` (WebSocket upgrades to the origin's `/ws`, held "
        f"open). The proxy's resident set (VmRSS, all its processes) is read every "
        f"{env['RSS_STEP']} connections; per connection = (after − before) / connections. "
        "The peers' configs allow enough connections and descriptors (nginx "
        "`worker_connections`, HAProxy `maxconn`; Portico inherits the script's `ulimit -n`).",
        "",
    ]
    data = {"kib": {"http": {}, "ws": {}}}
    body = []
    for target in ORDER:
        cells = [NAMES[target]]
        seen = False
        for mode in ("http", "ws"):
            r = next((x for x in rs if x["target"] == target and x["mode"] == mode), None)
            if r is None:
                cells += ["—", "—", "—"]
                continue
            seen = True
            c = r["connbench"]
            kib = c.get("kib_per_connection")
            if r["valid"]:
                data["kib"][mode][target] = kib
            note = "" if r["valid"] else f" (failed: {c.get('failed', c.get('error'))})"
            cells += [f"{fmt(c.get('rss_before_kib'), 0)} → {fmt(c.get('rss_after_kib'), 0)}",
                      fmt(c.get("connections"), 0), fmt(kib, 2) + note]
        if seen:
            body.append(cells)
    lines += table(["proxy", "RSS KiB, idle HTTP", "connections", "KiB per idle HTTP connection",
                    "RSS KiB, WebSockets", "sessions", "KiB per WebSocket"], body)
    lines.append("")
    for mode, title in (("http", "idle keep-alive HTTP connections"), ("ws", "open WebSockets")):
        series = [{"path": NAMES[r["target"]], "samples": r["connbench"].get("samples") or []}
                  for r in rs if r["mode"] == mode and r["connbench"].get("samples")]
        if series:
            lines += [plot("rss", series, os.path.join(env["IMG"], f"bench-rss-{mode}.svg"),
                           f"Proxy RSS with {title}"), ""]
    return lines, data


# ---------------------------------------------------------------------------- 5: ws
def ws_section():
    t = by_target("ws")
    direct = med(r["wsbench"].get("messages_per_s") for r in t.get("direct", []))
    lines = [
        "## Scenario 5: WebSocket echo",
        "",
        f"{measured('ws')}: `wsbench echo --connections {env['WS_CONNS']} --size {env['WS_SIZE']} "
        f"--seconds {env['WS_SECONDS']}` (after a 1 s warm-up run) on the origin's `/ws` echo: each "
        "session sends a binary message and waits for its echo, again and again. "
        f"{env['WS_REPS']} interleaved repetitions per path; median (min–max).",
        "",
    ]
    body = []
    data = {"messages_per_s": {}, "cpu_us": {}}
    for target in ORDER:
        rs = t.get(target, [])
        if not rs:
            continue
        mps = med(r["wsbench"].get("messages_per_s") for r in rs)
        data["messages_per_s"][target] = mps
        data["cpu_us"][target] = med(r["cpu_us"] for r in rs)
        proxy = target != "direct"
        body.append([NAMES[target], rng([r["wsbench"].get("messages_per_s") for r in rs], 0),
                     fx(ratio(mps, direct)),
                     fmt(med((r["wsbench"].get("rtt_us") or {}).get("p50") for r in rs), 0),
                     fmt(med((r["wsbench"].get("rtt_us") or {}).get("p99") for r in rs), 0),
                     rng([r["cpu_us"] for r in rs], 2) if proxy else "—"])
    lines += table(["path", "messages/s", "vs direct", "round trip p50 µs", "round trip p99 µs",
                    "proxy CPU µs/message"], body)
    lines += ["", discard_line("ws"), ""]
    lines += raw_table(
        "ws", ["path", "rep", "try", "kept", "messages/s", "rtt p50 µs", "rtt p99 µs",
               "proxy CPU µs/message", "other load % of a core"],
        lambda r: [NAMES[r["target"]], r["rep"], r["attempt"], verdict(r),
                   fmt(r["wsbench"].get("messages_per_s"), 0),
                   (r["wsbench"].get("rtt_us") or {}).get("p50"), (r["wsbench"].get("rtt_us") or {}).get("p99"),
                   fmt(r["cpu_us"], 2), r["other_pct"]],
    )
    return lines, data


# ---------------------------------------------------------------------------- 6: h2
def h2_section():
    t = by_target("h2")
    cpu = {k: med(r["cpu_us"] for r in v) for k, v in t.items()}
    peer_cpu = {p: cpu.get(p) for p in PEERS if cpu.get(p)}
    best = min(peer_cpu, key=peer_cpu.get) if peer_cpu else None
    lines = [
        "## Scenario 6: HTTP/2 (h2c prior knowledge)",
        "",
        f"{measured('h2')}: `h2load -t1 -c{env['H2_CONNS']} -m{env['H2_STREAMS']} -D {env['H2_SECONDS']} "
        f"-d post.json -H content-type:application/json` (after a {env['WARMUP']} s warm-up run), "
        "the request of scenario 1 over HTTP/2 without TLS, prior knowledge: to Portico on its "
        "usual listener (it tells h2c from HTTP/1.1 by the preface), to nginx on its second, "
        "`http2` port (nginx 1.22 cannot serve both on one clear-text port), to HAProxy on its "
        "usual bind (it detects the preface too), and directly to the origin (fakeworker serves "
        "h2c on its port). The proxies speak HTTP/1.1 to the origin. "
        f"{env['H2_REPS']} interleaved repetitions per path; median (min–max).",
        "",
    ]
    body = []
    for target in ORDER:
        rs = t.get(target, [])
        if not rs:
            continue
        proxy = target != "direct"
        body.append([NAMES[target], rng([r["rps"] for r in rs], 0),
                     ", ".join(sorted({r["mean_request"] for r in rs}))[:40],
                     rng([r["cpu_us"] for r in rs], 1) if proxy else "—",
                     fx(ratio(cpu.get(target), cpu.get(best))) if proxy else "—"])
    lines += table(["path", "requests/s", "mean request time", "proxy CPU µs/request",
                    f"vs better peer ({NAMES.get(best, '—')})"], body)
    lines += ["", discard_line("h2"), ""]
    lines += raw_table(
        "h2", ["path", "rep", "try", "kept", "req/s", "requests", "mean", "proxy CPU µs/req",
               "other load % of a core"],
        lambda r: [NAMES[r["target"]], r["rep"], r["attempt"], verdict(r), fmt(r["rps"], 0),
                   r["requests"], r["mean_request"], fmt(r["cpu_us"], 2), r["other_pct"]],
    )
    return lines, {"cpu": cpu, "best_peer": best}


# ---------------------------------------------------------------------------- 7, 8, 9
def async_section():
    j = read_json("async.json") or {}
    rel = os.path.relpath(env["ASYNC_OUT"], os.path.dirname(env["OUT"]))
    lines = [
        "## Scenario 7: async intake",
        "",
        f"{measured('async')}: `asyncbench --phases {env['ASYNC_PHASES']} --reps {env['ASYNC_REPS']} "
        f"--seconds {env['ASYNC_SECONDS']} --clients {env['ASYNC_CLIENTS']}` (its own Portico, "
        "fakeworker and redis-server). Durable intake: `202` only once the job is in the queue "
        f"file (embedded) or Redis. Details, method and every try: [{rel}]({rel}).",
        "",
        f"- Capacity, embedded queue, {env['ASYNC_CLIENTS']} clients back to back: "
        f"**{fmt(j.get('embedded_capacity'), 0)} jobs/s** accepted durably.",
        f"- Paced at 5,000/s offered: p99 intake latency {fmt(j.get('embedded_paced_p99_ms'), 2)} ms.",
    ]
    for row in j.get("intake_alone") or []:
        lines.append(f"- Intake alone, {row.get('backend')} ({row.get('threads')} thread(s)): "
                     f"{fmt(row.get('rate'), 0)} jobs/s, p99 {fmt(row.get('p99_ms'), 2)} ms, "
                     f"{row.get('errors')} errors.")
    return lines, {"capacity": j.get("embedded_capacity"), "paced_p99_ms": j.get("embedded_paced_p99_ms")}


def ipfilter_section():
    j = read_json("ipfilter.json") or {}
    lines = [
        "## Scenario 8: ipfilter lookups",
        "",
        f"{measured('ipfilter')}: `cargo bench -p ipfilter --bench lookup -- --warm-up-time 1 "
        f"--measurement-time {env['IPF_SECONDS']} '^lookup/100000$'` (criterion, release profile): "
        "4,096 random probes per iteration against a compiled set of 100,000 random IPv4 and IPv6 "
        "rules; the median iteration time divided by 4,096. A short measurement: the full "
        "sweep (10 to 100,000 rules, crowded sets, compile times) and its method are in "
        "[benchmarks-ipfilter.md](benchmarks-ipfilter.md).",
        "",
        f"- **{fmt(j.get('ns_per_lookup'), 1)} ns per lookup** at 100,000 rules "
        f"(criterion's 95% interval of the median {fmt(j.get('ci_low'), 1)}–{fmt(j.get('ci_high'), 1)} ns).",
    ]
    return lines, {"ns_per_lookup": j.get("ns_per_lookup")}


def scale_section():
    j = read_json("scale.json") or {}
    rel = os.path.relpath(env["SCALE_OUT"], os.path.dirname(env["OUT"]))
    h, w = j.get("handoff_ms") or {}, j.get("wake_to_first_byte_ms") or {}
    lines = [
        "## Scenario 9: cold start, the gateway's share",
        "",
        f"{measured('scale')}: `scalebench --rounds {env['SCALE_ROUNDS']} --bursts {env['SCALE_BURSTS']} "
        f"--burst-seconds {env['SCALE_BURST_SECONDS']}` (its own Portico and fakeworker process "
        "workers, nothing pinned). The hand-off is what the gateway adds to a cold start: from the "
        "worker's first healthy probe answer to the held request reaching it. Details, the burst "
        f"and its plot: [{rel}]({rel}).",
        "",
        f"- Hand-off: p50 **{fmt(h.get('p50'), 1)} ms**, p99 {fmt(h.get('p99'), 1)} ms, max "
        f"{fmt(h.get('max'), 1)} ms over {h.get('n', '—')} cold starts ({j.get('cold_failures', '—')} failed).",
        f"- Wake to first byte (including the worker's boot): p50 {fmt(w.get('p50'), 0)} ms, "
        f"p99 {fmt(w.get('p99'), 0)} ms.",
    ]
    return lines, {"handoff_p50_ms": h.get("p50")}


# ---------------------------------------------------------------------------- assembly
SECTIONS = [
    ("http", http_section), ("latency", latency_section), ("sse", sse_section),
    ("rss", rss_section), ("ws", ws_section), ("h2", h2_section),
    ("async", async_section), ("ipfilter", ipfilter_section), ("scale", scale_section),
]
DATA_RE = re.compile(r"<!-- bench:data (\{.*?\}) -->")


def old_block(name):
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    m = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), old, re.S)
    return m.group(1) if m else None


bodies, data = {}, {}
for name, fn in SECTIONS:
    if name in ran:
        lines, d = fn()
        d = {"when": env["START_TIME"], "secs": timings.get(name), "data": d}
        bodies[name] = "\n".join(lines) + f"\n\n<!-- bench:data {json.dumps(d)} -->"
        data[name] = d
    else:
        body = old_block(name)
        if body is None:
            body = f"## Scenario `{name}`\n\nNot run yet: `scripts/bench.sh {name}`."
        m = DATA_RE.search(body)
        if m:
            data[name] = json.loads(m.group(1))
        bodies[name] = body


def d(name, *keys):
    v = (data.get(name) or {}).get("data")
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return v


def targets_section():
    """The targets of the benchmark issue, met or missed, from the sections' data."""
    def row(goal, value, met, source):
        if isinstance(met, str):
            state = met
        else:
            state = "—" if met is None else ("**met**" if met else "**missed**")
        return [goal, value, state, source]

    body = []
    cpu = d("http", "cpu") or {}
    best = d("http", "best_peer")
    r_peer = ratio(cpu.get("portico"), cpu.get(best)) if best else None
    body.append(row("CPU per request ≤ 0.8× the better of nginx and HAProxy",
                    f"{fx(r_peer)} of {NAMES.get(best, '—')}", None if r_peer is None else r_peer <= 0.8,
                    "scenario 1"))
    # Like for like: nginx doing Portico's per-request work (scenario 1's nginx_work; absent
    # from sections of runs before it existed).
    norm = d("http", "norm") or {}
    r_work = ratio(cpu.get("portico"), cpu.get("nginx_work"))
    r_work_norm = ratio(norm.get("portico"), norm.get("nginx_work"))
    body.append(row("CPU per request no worse than nginx doing the same work",
                    "—" if r_work is None and r_work_norm is None
                    else f"{fx(r_work)} (÷ wrk: {fx(r_work_norm)})",
                    None if r_work is None else r_work <= 1.0, "scenario 1"))
    r_floor = ratio(cpu.get("portico"), cpu.get("floor"))
    body.append(row("CPU per request ≤ 1.1× the hyper floor", fx(r_floor),
                    None if r_floor is None else r_floor <= 1.1, "scenario 1"))
    added = d("latency", "added") or {}
    parts, mets = [], []
    for rate, a in sorted(added.items(), key=lambda kv: int(kv[0])):
        p, n = (a.get("portico") or {}).get("p50"), (a.get("nginx") or {}).get("p50")
        if p is None or n is None:
            continue
        rr = p / n if n > 0 else None
        parts.append(f"{rate}/s: {fmt(p, 0)} vs {fmt(n, 0)} µs ({fx(rr)})")
        mets.append(rr is not None and rr <= 0.7)
    body.append(row("Added p50 latency at 1 connection ≤ 0.7× nginx's", "; ".join(parts) or "—",
                    all(mets) if mets else None, "scenario 2"))
    a99 = (d("sse", "added_p99_us") or {}).get("portico")
    spread = d("sse", "direct_p99_spread_us")
    if a99 is not None and spread is not None and spread > 200:
        body.append(row("SSE added delay p99 ≤ 0.2 ms",
                        f"{fmt(a99, 0)} µs; the direct path's own p99 moved by {fmt(spread, 0)} µs "
                        "between repetitions (the load generator's share of CPU 0)",
                        "**not resolved** by this run", "scenario 3"))
    else:
        body.append(row("SSE added delay p99 ≤ 0.2 ms", f"{fmt(a99, 0)} µs",
                        None if a99 is None else a99 <= 200, "scenario 3"))
    af = (d("sse", "added_first_ms") or {}).get("portico")
    body.append(row("SSE added time to first event ≤ 0.5 ms", f"{fmt(af, 3)} ms",
                    None if af is None else af <= 0.5, "scenario 3"))
    kh = (d("rss", "kib", "http") or {}).get("portico")
    body.append(row("≤ 4 KiB RSS per idle keep-alive client connection", f"{fmt(kh, 2)} KiB",
                    None if kh is None else kh <= 4, "scenario 4"))
    kw = (d("rss", "kib", "ws") or {}).get("portico")
    body.append(row("≤ 8 KiB RSS per open proxied WebSocket", f"{fmt(kw, 2)} KiB",
                    None if kw is None else kw <= 8, "scenario 4"))
    cap = d("async", "capacity")
    body.append(row("Async intake ≥ 5,000 durable requests/s", f"{fmt(cap, 0)}/s",
                    None if cap is None else cap >= 5000, "scenario 7"))
    ns = d("ipfilter", "ns_per_lookup")
    body.append(row("ipfilter ≤ 50 ns per lookup at 100k rules", f"{fmt(ns, 1)} ns",
                    None if ns is None else ns <= 50, "scenario 8"))
    lines = [
        "## Targets",
        "",
        "Computed from the figures of the sections below (each from its own last run: see the "
        "date in the section). Ratios are Portico with 1 worker thread against the other paths "
        "in the same run. — means not measured yet.",
        "",
    ] + table(["target", "measured", "state", "from"], body)
    return "\n".join(lines)


def timings_section():
    body, total = [], 0
    for name, _ in SECTIONS:
        secs = (data.get(name) or {}).get("secs")
        when = (data.get(name) or {}).get("when", "—")
        total += secs or 0
        body.append([name, "—" if secs is None else secs, when])
    for step in ("build", "peers"):
        if step in timings:
            body.append([f"({step})", timings[step], env["START_TIME"]])
            total += timings[step]
    elapsed = int(time.time()) - int(env["T_START"])
    if set(ran) == {n for n, _ in SECTIONS}:
        note = (f"The last run of all scenarios took **{elapsed} s** in all (build with a warm "
                "`target/`, install checks and report included).")
    else:
        note = (f"The last run covered `{' '.join(ran)}` only and took {elapsed} s; the other rows "
                "are from earlier runs (see the dates).")
    lines = [
        "## Wall time",
        "",
        "Seconds per scenario, each from its last run. The whole `scripts/bench.sh` must stay "
        f"under 20 minutes (1,200 s). {note}",
        "",
    ] + table(["scenario", "seconds", "run"], body) + ["", f"Sum: {total} s."]
    return "\n".join(lines)


def config_text(*paths):
    for p in paths:
        if os.path.exists(p):
            return open(p).read().rstrip()
    return "(not generated in this run)"


INTRO = open(os.path.join(os.path.dirname(__file__), "intro.md")).read().rstrip()

SETUP = f"""## Setup of the last run

- Machine: {env['MACHINE_CPUS']} CPUs, {env['MACHINE_MODEL']}, {env['MACHINE_MEM']} RAM, Linux
  {env['MACHINE_KERNEL']}, {env['MACHINE_OS']} (a shared virtual machine: other work and the host's
  steal time come and go).
- Generated {env['START_TIME']}, scenarios `{env['SCENARIOS_RUN']}`; Portico at `{env['GIT_REV']}`
  ({env['RUSTC_VERSION']}, release profile); {env['NGINX_VERSION'] or 'nginx not used'};
  {env['HAPROXY_VERSION'] or 'HAProxy not used'}; {env['WRK_VERSION']}; {env['H2LOAD_VERSION']}.
- Pinning: {env['PINNING']}.
- Origin: `RUST_LOG=warn fakeworker --port 0 --record-limit 0` (HTTP/1.1 and h2c on one port).
- Portico: `portico run --config portico.toml`, from
  [bench/configs/portico.toml.template](../bench/configs/portico.toml.template): one public static
  endpoint `bench/origin` with the origin as its only worker, access log to a file; requests go to
  `{env['PORTICO_PREFIX']}/<path>`. `worker_threads = {env['PORTICO_THREADS']}` pinned on CPU 1, and in
  scenario 1 a second instance with `worker_threads = 2`, unpinned: two data-plane threads on one
  pinned CPU would only take turns, so it may use both CPUs and shares CPU 0 with origin and wrk.
- nginx: `nginx -p <dir> -e <dir>/error.log -c nginx.conf -g 'daemon off;'`, from
  [bench/peers/nginx.conf.template](../bench/peers/nginx.conf.template); in scenario 1 a second
  nginx started the same way and pinned the same, doing Portico's per-request work, from
  [bench/peers/nginx-same-work.conf.template](../bench/peers/nginx-same-work.conf.template).
- HAProxy: `haproxy -db -f haproxy.cfg`, from
  [bench/peers/haproxy.cfg.template](../bench/peers/haproxy.cfg.template).
- Hyper floor: `refproxy --upstream 127.0.0.1:<origin port>`.
- Noise threshold: other load above {env['NOISE_PCT']}% of one core during a run; up to
  {env['QUIET_WAIT']} s waited for quiet before each run ({env['QUIET_BUDGET']} s in all);
  {env['MAX_RETRIES']} repeats at most.
- Re-run: `scripts/bench.sh` (all) or `scripts/bench.sh SCENARIO...` (`http latency sse ws h2 rss
  async ipfilter scale`); settings (`BENCH_REPS`, `BENCH_SECONDS`, ...) at the top of the script.

<details><summary>Generated configs of the last run</summary>

```nginx
{config_text(os.path.join(run_dir, 'nginx', 'nginx.conf'), 'bench/peers/nginx.conf.template')}
```

```nginx
{config_text(os.path.join(run_dir, 'nginx_work', 'nginx.conf'), 'bench/peers/nginx-same-work.conf.template')}
```

```haproxy
{config_text(os.path.join(run_dir, 'haproxy', 'haproxy.cfg'), 'bench/peers/haproxy.cfg.template')}
```

```toml
{config_text(os.path.join(run_dir, 'portico.toml'), 'bench/configs/portico.toml.template')}
```

</details>
"""
if env.get("PORTICO_NOTE"):
    SETUP += f"\n**Portico was not available in the last run:** {env['PORTICO_NOTE']}.\n"

OPT_BEGIN, OPT_END = "<!-- bench:optimisations:begin -->", "<!-- bench:optimisations:end -->"
m = re.search(re.escape(OPT_BEGIN) + r"\n(.*?)\n?" + re.escape(OPT_END), old, re.S)
optimisations = m.group(1) if m else (
    "## Optimisations\n\nWritten by hand: each change to the request path with its before/after "
    "figures. scripts/bench.sh keeps this section as it is."
)

parts = [INTRO, "", targets_section(), "", SETUP]
for name, _ in SECTIONS:
    parts.append(f"<!-- bench:{name}:begin -->\n{bodies[name]}\n<!-- bench:{name}:end -->\n")
parts.append(timings_section() + "\n")
parts.append(f"{OPT_BEGIN}\n{optimisations}\n{OPT_END}\n")
open(env["OUT"], "w").write("\n".join(parts))

# The summary tables on the terminal too.
print(targets_section() + "\n")
for name in ran:
    if name in bodies:
        print(bodies[name].split("<details>")[0].split("<!-- bench:data")[0].rstrip() + "\n")
