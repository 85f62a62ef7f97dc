"""Alerts end to end: the real `portico` binary with an `error_rate` rule over a real fake
worker, a real SMTP server (aiosmtpd) and a webhook receiver (http.server), all on loopback
port 0. An error burst makes the alert go pending then firing; successes resolve it. Each
channel gets exactly one firing and one resolved notification, and `GET /admin/alerts`
shows the transitions."""

import email
import email.policy
import http.server
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from aiosmtpd.controller import Controller

PREFIX = "/project/p1/endpoint/e1"
DEADLINE_SECONDS = 30


class PortZeroController(Controller):
    """aiosmtpd's threaded controller bound to port 0; `port` is the port it got."""

    def _create_server(self):
        async def create():
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def snapshot(self):
        with self.lock:
            return list(self.messages)


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = PortZeroController(inbox, hostname="127.0.0.1")
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


@pytest.fixture
def webhook_receiver():
    """An HTTP server on port 0 that keeps every JSON body POSTed to it."""
    received = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def snapshot():
        with lock:
            return list(received)

    server.snapshot = snapshot
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/portico"
    yield server
    server.shutdown()
    server.server_close()


def config(worker, smtp_port, webhook_url):
    return f"""
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 2
metrics_public = true

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "e1"
project = "p1"
public = true

[endpoint.workers]
kind = "static"
urls = ["{worker}"]

[[alert]]
name = "high-errors"
endpoint = "e1"
metric = "error_rate"
operator = ">"
threshold = 0.5
for_seconds = 1
min_requests = 5

[alerts]
webhook_url = "{webhook_url}"
email_to = ["On Call <oncall@example.com>"]
evaluate_every_seconds = 1

[smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "Portico <portico@example.com>"
starttls = "opportunistic"
timeout_seconds = 5
"""


def request(base, path):
    """GET `path`; returns the status code (error statuses included)."""
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def get_json(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.load(response)


def wait_for(what, check, deadline_seconds=DEADLINE_SECONDS):
    """Polls `check()` until it returns something truthy, failing at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alert(admin):
    alerts = get_json(admin, "/admin/alerts")["alerts"]
    assert len(alerts) == 1, alerts
    return alerts[0]


def test_error_burst_fires_once_and_resolves_once(
    fakeworker, portico_from_config, smtp_server, webhook_receiver
):
    """An error_rate rule goes ok → pending → firing on a burst of 500s and back to ok
    once successes dilute it; webhook and SMTP each get one firing and one resolved."""
    worker = fakeworker()
    proc = portico_from_config(config(worker, smtp_server.port, webhook_receiver.url))
    public = "http://" + proc.listening["public"]
    admin = "http://" + proc.listening["admin"]

    first = wait_for("the first evaluation", lambda: get_json(admin, "/admin/alerts")["alerts"])
    assert first == [{
        "name": "high-errors", "endpoint": "e1", "metric": "error_rate", "operator": ">",
        "threshold": 0.5, "for_seconds": 1, "state": "ok",
        # No requests yet: fewer than min_requests, so no value.
        "value": None, "since": None, "last_notified": None,
    }]

    # The burst: every request fails.
    for _ in range(10):
        assert request(public, PREFIX + "/status/500") == 500
    seen = []

    def firing():
        state = alert(admin)
        if not seen or seen[-1] != state["state"]:
            seen.append(state["state"])
        return state if state["state"] == "firing" else None

    fired = wait_for("the alert to fire", firing)
    # Pending lasts for_seconds (at least one evaluation), polled every 50 ms.
    assert seen[-2:] == ["pending", "firing"], seen
    assert fired["value"] == 1.0
    assert fired["since"] and fired["last_notified"]

    # Only successes from now on: 10 errors out of 30 is no longer > 0.5.
    for _ in range(20):
        assert request(public, PREFIX + "/status/200") == 200
    resolved = wait_for(
        "the alert to resolve",
        lambda: (lambda a: a if a["state"] == "ok" else None)(alert(admin)),
    )
    assert resolved["value"] == pytest.approx(10 / 30)
    assert resolved["last_notified"] >= fired["last_notified"]

    hooks = wait_for("two webhooks", lambda: (lambda r: r if len(r) >= 2 else None)(
        webhook_receiver.snapshot()))
    mails = wait_for("two e-mails", lambda: (lambda m: m if len(m) >= 2 else None)(
        smtp_server.snapshot()))
    # One notification per transition, not one per evaluation: several more evaluations
    # (evaluate_every_seconds = 1) add nothing.
    stable_until = time.monotonic() + 3
    while time.monotonic() < stable_until:
        assert len(webhook_receiver.snapshot()) == 2
        assert len(smtp_server.snapshot()) == 2
        time.sleep(0.1)

    (path, content_type, firing_hook), (_, _, resolved_hook) = hooks
    assert path == "/hooks/portico"
    assert content_type == "application/json"
    expected_keys = {"alert", "endpoint", "metric", "operator", "threshold", "value", "state",
                     "since", "time", "message"}
    assert set(firing_hook) == expected_keys
    assert set(resolved_hook) == expected_keys
    assert firing_hook["state"] == "firing"
    assert resolved_hook["state"] == "resolved"
    for hook in (firing_hook, resolved_hook):
        assert hook["alert"] == "high-errors"
        assert hook["endpoint"] == "e1"
        assert hook["metric"] == "error_rate"
        assert hook["operator"] == ">"
        assert hook["threshold"] == 0.5
        # Both name the start of the episode.
        assert hook["since"] == firing_hook["since"]
    assert firing_hook["value"] == 1.0
    assert resolved_hook["value"] == pytest.approx(10 / 30)
    assert firing_hook["message"].startswith("[FIRING] high-errors on e1: error_rate is 1 (> 0.5)")
    assert resolved_hook["message"].startswith(
        "[RESOLVED] high-errors on e1: error_rate is 0.3333, no longer > 0.5")
    assert firing_hook["time"] < resolved_hook["time"]

    (sender, recipients, firing_mail), (_, _, resolved_mail) = mails
    assert sender == "portico@example.com"
    assert recipients == ["oncall@example.com"]
    assert firing_mail["Subject"] == "[Portico FIRING] high-errors on e1"
    assert resolved_mail["Subject"] == "[Portico RESOLVED] high-errors on e1"
    assert firing_mail["From"] == "Portico <portico@example.com>"
    assert firing_mail["To"] == "On Call <oncall@example.com>"
    firing_body = firing_mail.get_content()
    assert firing_body.startswith(firing_hook["message"]), firing_body
    assert "state: firing" in firing_body.splitlines()
    assert "state: resolved" in resolved_mail.get_content().splitlines()

    metrics = urllib.request.urlopen(admin + "/metrics", timeout=10).read().decode()
    assert 'portico_alert_firing{alert="high-errors",endpoint="e1"} 0' in metrics, metrics
    for channel in ("webhook", "email"):
        line = f'portico_alert_notifications_total{{channel="{channel}",outcome="sent"}} 2'
        assert line in metrics, metrics


def test_admin_alerts_lists_each_endpoint_of_a_wildcard_rule(
    fakeworker, portico_from_config, tmp_path
):
    """A `*` rule has one entry per endpoint; ready_workers reads the live worker count."""
    worker = fakeworker()
    text = f"""
[server]
admin_listen = "127.0.0.1:0"

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "up"
project = "p1"
[endpoint.workers]
kind = "static"
urls = ["{worker}"]

[[endpoint]]
id = "down"
project = "p1"
[endpoint.workers]
kind = "static"
urls = ["http://127.0.0.1:9"]
[endpoint.health]
interval_ms = 200
timeout_ms = 100
unhealthy_threshold = 1

[[alert]]
name = "no-workers"
endpoint = "*"
metric = "ready_workers"
operator = "<"
threshold = 1
notify = []

[alerts]
evaluate_every_seconds = 1
"""
    proc = portico_from_config(text)
    admin = "http://" + proc.listening["admin"]

    def states():
        alerts = get_json(admin, "/admin/alerts")["alerts"]
        by_endpoint = {a["endpoint"]: a for a in alerts}
        if by_endpoint.get("down", {}).get("state") == "firing" and \
                by_endpoint.get("up", {}).get("value") == 1:
            return alerts
        return None

    alerts = wait_for("the worker-less endpoint to fire", states)
    assert [a["endpoint"] for a in alerts] == ["up", "down"]
    assert all(a["name"] == "no-workers" for a in alerts)
    up, down = alerts
    assert up["state"] == "ok" and up["value"] == 1
    assert down["value"] == 0 and down["last_notified"] is not None
