"""The Grafana dashboard in docs/grafana/portico.json: its JSON has the shape Grafana imports
(schema 39, a Prometheus datasource input, project/endpoint variables, panels on a 24-column
grid without overlaps), its PromQL is sound (rates of counters, quantiles over `le`), and
every metric it queries is one a running Portico exports — and every metric Portico exports
has a panel."""

import hashlib
import json
import re
import time
import urllib.request

import jsonschema_rs
import pytest

from conftest import ROOT

DASHBOARD = ROOT / "docs" / "grafana" / "portico.json"
SOURCE = ROOT / "gateway" / "src"
TOKEN = "grafana-test-token"

# Metrics that exist only once something happens that the test's Portico does not bring
# about: an alert notification sent to a channel, a reload. Their names are checked against
# the source.
CONDITIONAL = {"portico_alert_notifications_total", "portico_config_reloads_total"}

# How long the first alert evaluation may take to show in /metrics.
ALERT_SECONDS = 10

# Grafana's own variables, which need no templating entry.
BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
            "__all", "__name"}

PANEL_TYPES = {"row", "timeseries", "stat", "table"}

GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${DS_PROMETHEUS}"}},
}
SCHEMA = {
    "type": "object",
    "required": ["__inputs", "__requires", "panels", "schemaVersion", "templating", "time",
                 "title", "uid", "tags", "refresh"],
    "properties": {
        "schemaVersion": {"const": 39},
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "__inputs": {
            "type": "array",
            "contains": {
                "type": "object",
                "required": ["name", "type", "pluginId"],
                "properties": {
                    "name": {"const": "DS_PROMETHEUS"},
                    "type": {"const": "datasource"},
                    "pluginId": {"const": "prometheus"},
                },
            },
        },
        "__requires": {
            "type": "array",
            "items": {"type": "object", "required": ["type", "id", "name", "version"]},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "type", "datasource", "query"],
                "properties": {"type": {"const": "query"}, "datasource": DATASOURCE},
            }}},
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": sorted(PANEL_TYPES)},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": GRID,
                    "datasource": DATASOURCE,
                    "targets": {"type": "array", "items": {
                        "type": "object",
                        "required": ["refId", "expr", "datasource"],
                        "properties": {
                            "expr": {"type": "string", "minLength": 1},
                            "datasource": DATASOURCE,
                        },
                    }},
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": {"properties": {"gridPos": {"properties": {"h": {"const": 1},
                                                                   "w": {"const": 24}}}}},
                "else": {"required": ["datasource", "targets"],
                         "properties": {"targets": {"minItems": 1}}},
            },
        },
    },
}


def dashboard():
    return json.loads(DASHBOARD.read_text())


def targets(board):
    """(panel title, target) of every query."""
    return [(panel["title"], target)
            for panel in board["panels"] for target in panel.get("targets", [])]


def queries(board):
    """Every PromQL text: panel queries and variable queries."""
    texts = [target["expr"] for _, target in targets(board)]
    texts += [var["query"]["query"] for var in board["templating"]["list"]]
    return texts


def base(name):
    """A histogram's series name without `_bucket`, `_sum` or `_count`."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def referenced_metrics(board):
    return {base(name) for text in queries(board) for name in re.findall(r"portico_\w+", text)}


def test_dashboard_shape():
    """The JSON validates against the shape Grafana imports, ids are unique, panels stay
    within 24 columns without overlapping, every datasource is the declared input, and every
    variable a query uses is defined."""
    board = dashboard()
    errors = [str(error) for error in jsonschema_rs.Draft202012Validator(SCHEMA).iter_errors(board)]
    assert not errors, "\n\n".join(errors)

    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"

    cells = {}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid: {grid}"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other} at {(x, y)}"

    inputs = {item["name"] for item in board["__inputs"]}
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(
        [p.get("datasource") for p in board["panels"]]
        + [t["datasource"] for _, t in targets(board)]
        + [v["datasource"] for v in board["templating"]["list"]])))
    assert used == inputs == {"DS_PROMETHEUS"}

    required = {item["id"] for item in board["__requires"] if item["type"] == "panel"}
    assert {p["type"] for p in board["panels"]} - {"row"} <= required

    variables = {var["name"] for var in board["templating"]["list"]}
    assert {"project", "endpoint"} <= variables
    for text in queries(board):
        for name in re.findall(r"\$\{?(\w+)", text):
            # `$1` is a capture group of label_replace, not a variable.
            if name.isdigit() or name in BUILTINS:
                continue
            assert name in variables, f"undefined variable ${name} in {text}"
    for var in board["templating"]["list"]:
        assert var["query"]["query"].startswith("label_values(")


def test_promql_is_sound():
    """Rates and increases apply to counters and histogram buckets only; every quantile is
    in (0, 1) over buckets summed by `le`; every bucket series sits in a quantile; legends
    name only labels their query keeps; parentheses balance; every query reads a Portico
    metric and filters by the endpoint variable (alert notifications and config reloads have
    no endpoint)."""
    board = dashboard()
    for title, target in targets(board):
        expr = target["expr"]
        where = f"{title}: {expr}"
        assert expr.count("(") == expr.count(")"), where
        assert expr.count("{") == expr.count("}"), where
        assert re.search(r"portico_\w+", expr), where
        if "alert_notifications" not in expr and "portico_config_" not in expr:
            assert 'endpoint=~"$endpoint"' in expr, where
        for function, metric in re.findall(r"\b(rate|increase)\((portico_\w+)", expr):
            assert metric.endswith(("_total", "_bucket")), f"{function} of a gauge: {where}"
        for metric in re.findall(r"portico_\w+", expr):
            if metric.endswith(("_total", "_bucket")):
                assert re.search(rf"\b(rate|increase)\({metric}\b", expr), \
                    f"{metric} used without rate/increase: {where}"
        buckets = re.findall(r"portico_\w+_bucket", expr)
        quantiles = re.findall(
            r"histogram_quantile\(([0-9.]+), sum by \(([^)]*)\) \(rate\((portico_\w+_bucket)",
            expr)
        assert len(quantiles) == len(buckets), f"bucket outside a quantile: {where}"
        for quantile, by, _ in quantiles:
            assert 0 < float(quantile) < 1, where
            assert "le" in [label.strip() for label in by.split(",")], where
        for label in re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")):
            assert re.search(rf"\b{label}\b", expr), f"legend label {label} not in {where}"


def test_covers_the_asked_for_views():
    """The dashboard has the views operators asked for, found by the metrics they read."""
    board = dashboard()
    by_metric = {}
    for title, target in targets(board):
        for name in re.findall(r"portico_\w+", target["expr"]):
            by_metric.setdefault(base(name), set()).add(title)
    for metric in ["portico_requests_total", "portico_request_duration_seconds",
                   "portico_upstream_first_byte_seconds", "portico_inflight_requests",
                   "portico_pending_requests", "portico_desired_workers", "portico_workers",
                   "portico_scale_events_total", "portico_async_queue_depth",
                   "portico_async_jobs_total", "portico_tokens_total",
                   "portico_alert_firing"]:
        assert metric in by_metric, f"no panel reads {metric}"
    exprs = " ".join(target["expr"] for _, target in targets(board))
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(portico_request_duration" \
            in exprs, f"no p{quantile} request latency"


# --- against a running Portico -------------------------------------------------------------------

def config(worker_url):
    """One endpoint on a static fakeworker, called with a project token (caller and token
    metrics), with an async route on the embedded queue (async metrics) and an alert rule
    evaluated every second (alert metrics)."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return f"""
[server]
admin_listen = "127.0.0.1:0"
metrics_public = true
state_dir = "./state"
grace_period_seconds = 1

[[listener]]
name = "public"
address = "127.0.0.1:0"

[object_store]
url = "file://./results"

[alerts]
evaluate_every_seconds = 1

[[alert]]
name = "held"
endpoint = "e1"
metric = "pending_requests"
operator = ">"
threshold = 100

[[project]]
id = "p1"
tokens = [{{ name = "ci", sha256 = "{digest}" }}]

[[endpoint]]
id = "e1"
project = "p1"
timeouts = {{ connect_ms = 1000, first_byte_seconds = 30, idle_seconds = 30 }}

[endpoint.workers]
kind = "static"
urls = ["{worker_url}"]

[endpoint.async]
routes = ["/v1/batch"]
queue = "embedded"
"""


def exported(text):
    """`{base name: type}` of every metric family in a Prometheus text exposition."""
    families = {}
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["#", "TYPE"]:
            families[words[2]] = words[3]
        elif line and not line.startswith("#"):
            families.setdefault(base(re.split(r"[{ ]", line)[0]), "untyped")
    return families


def in_source(name):
    return any(name in path.read_text() for path in SOURCE.rglob("*.rs"))


@pytest.fixture
def scraped(portico_from_config, fakeworker):
    """The metric families a Portico exports after serving one chat completion and
    evaluating its alert rule once (waited for up to ALERT_SECONDS)."""
    worker = fakeworker()
    proc = portico_from_config(config(worker))
    request = urllib.request.Request(
        f"http://{proc.listening['public']}/project/p1/endpoint/e1/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        json.loads(answer.read())
    deadline = time.monotonic() + ALERT_SECONDS
    while True:
        with urllib.request.urlopen(f"http://{proc.listening['admin']}/metrics",
                                    timeout=10) as page:
            families = exported(page.read().decode())
        if "portico_alert_firing" in families or time.monotonic() > deadline:
            return families
        time.sleep(0.1)


def test_every_queried_metric_is_exported(scraped):
    """Each metric the dashboard queries is in a running Portico's /metrics with the type
    the query assumes (rates of counters and histograms, gauges read as they are); the few
    that need a notification sent are at least named in the source."""
    board = dashboard()
    referenced = referenced_metrics(board)
    assert CONDITIONAL <= referenced, "the conditional list names metrics the dashboard uses"
    for name in sorted(referenced - CONDITIONAL):
        assert name in scraped, f"{name} is queried but not exported: {sorted(scraped)}"
    for name in sorted(CONDITIONAL):
        assert name not in scraped or scraped[name] in ("gauge", "counter"), name
        assert in_source(f'"{name}"'), f"{name} is named nowhere in gateway/src"

    rated = {base(metric) for text in queries(board)
             for metric in re.findall(r"\b(?:rate|increase)\((portico_\w+)", text)}
    for name in sorted(rated - CONDITIONAL):
        assert scraped[name] in ("counter", "histogram"), f"rate of {scraped[name]} {name}"
    plain = referenced - rated - CONDITIONAL
    for name in sorted(plain):
        assert scraped[name] == "gauge", f"{name} is read as a gauge but is {scraped[name]}"


def test_every_exported_metric_has_a_panel(scraped):
    """Nothing Portico exports is left off the dashboard."""
    missing = {name for name in scraped if name.startswith("portico_")} - referenced_metrics(
        dashboard())
    assert not missing, f"exported but on no panel: {sorted(missing)}"
