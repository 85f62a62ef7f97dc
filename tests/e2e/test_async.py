"""Async invocation (issue 7, DESIGN.md §5) end to end: the real `portico` binary with a real
S3-compatible store (s3s-fs), a real Redis, real fake workers, and plain HTTP clients. Jobs
go in with `202`, come out through the status API, and their results are read where
Portico said they would be, with boto3 or from disk."""

import hashlib
import http.client
import http.server
import json
import queue
import re
import secrets
import threading
import time
import types
import urllib.request
import uuid

import pytest

from conftest import binary

PREFIX = "/project/p1/endpoint/chat"
ROUTE = "/v1/chat/completions"
EXPLICIT = "/v1/async/v1/chat/completions"
STATUS = PREFIX + "/v1/async/status/"
TERMINAL = {"completed", "failed", "expired"}
STATUS_KEYS = {"request_id", "status", "response_location", "attempts", "submitted_at",
               "updated_at"}
RESULT_KEYS = {"request_id", "endpoint", "route", "status", "status_code", "headers", "body",
               "error", "attempts", "submitted_at", "started_at", "completed_at"}
TOKEN = "ptk_" + secrets.token_hex(32)


# --- configuration ------------------------------------------------------------------------------

def toml(value):
    """A TOML value: JSON's strings, integers, floats, booleans and arrays are valid TOML."""
    return json.dumps(value)


def static_workers(*urls):
    return f'kind = "static"\nurls = {toml(list(urls))}'


def process_workers(*flags, startup_timeout_seconds=30):
    command = [binary("fakeworker"), "--port", "{port}", *flags]
    return (f'kind = "process"\ncommand = {toml(command)}\nhealth_path = "/health"\n'
            f"startup_timeout_seconds = {startup_timeout_seconds}")


def keys(table):
    return "\n".join(f"{key} = {toml(value)}" for key, value in table.items())


def config(store, workers, scaling=None, asynchronous=None, fenced=False, cors_origins=None):
    """A Portico config: project `p1` (token `ci` = TOKEN), endpoint `chat` with `workers`
    (the `[endpoint.workers]` body), async on chat completions, `/echo` and `/status/404`
    (keys in `asynchronous` override the defaults), results in `store`. `fenced` adds an
    endpoint `fenced` on the same workers that only 127.0.0.2 may call; `cors_origins`
    sets the `chat` endpoint's."""
    settings = {
        "routes": [ROUTE, "/echo", "/status/404"],
        "concurrency_per_worker": 4,
        "max_attempts": 3,
        "ttl_seconds": 600,
        "queue": "embedded",
        **(asynchronous or {}),
    }
    endpoint = f"""
[endpoint.workers]
{workers}
{"[endpoint.scaling]" if scaling else ""}
{keys(scaling or {})}

[endpoint.async]
{keys(settings)}
"""
    fence = f"""
[[security_group]]
id = "sg"
inbound = [{{ protocol = "tcp", source = "127.0.0.2/32" }}]

[[endpoint]]
id = "fenced"
project = "p1"
security_groups = ["sg"]
{endpoint}"""
    return f"""
[server]
admin_listen = "127.0.0.1:0"
metrics_public = true
state_dir = "./state"
grace_period_seconds = 1

[[listener]]
name = "public"
address = "127.0.0.1:0"

{store.toml}

[[project]]
id = "p1"
tokens = [{{ name = "ci", sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}" }}]

[[endpoint]]
id = "chat"
project = "p1"
max_body_bytes = 65536
timeouts = {{ connect_ms = 1000, first_byte_seconds = 30, idle_seconds = 30 }}
{f"cors_origins = {toml(cors_origins)}" if cors_origins else ""}
{endpoint}
{fence if fenced else ""}"""


# --- result stores ------------------------------------------------------------------------------

class S3Store:
    """Results in the s3s-fs bucket `results` under the prefix `runs/`, read with boto3."""

    def __init__(self, server):
        self.server = server
        self.client = server.client()
        self.env = server.env
        self.toml = (f'[object_store]\nurl = "s3://{server.bucket}/runs"\n'
                     f'endpoint = "{server.endpoint}"\nregion = "{server.region}"')
        self.prefix = "runs/api/chat/request/"

    def location(self, request_id):
        return f"s3://{self.server.bucket}/{self.prefix}{request_id}.json"

    def read(self, request_id):
        got = self.client.get_object(Bucket=self.server.bucket,
                                     Key=f"{self.prefix}{request_id}.json")
        return json.loads(got["Body"].read())

    def names(self):
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.server.bucket, Prefix=self.prefix)
        return sorted(item["Key"][len(self.prefix):]
                      for page in pages for item in page.get("Contents", []))


class FileStore:
    """Results in `<config dir>/results` (the `file://` store, relative to the config)."""

    toml = '[object_store]\nurl = "file://./results"'
    env = None

    def __init__(self, config_dir):
        self.directory = (config_dir / "results" / "api" / "chat" / "request").resolve()

    def location(self, request_id):
        return f"file://{self.directory}/{request_id}.json"

    def read(self, request_id):
        return json.loads((self.directory / f"{request_id}.json").read_text())

    def names(self):
        if not self.directory.exists():
            return []
        return sorted(path.name for path in self.directory.iterdir())


@pytest.fixture(params=["s3", "file"])
def store(request, tmp_path):
    """Each result store in turn: s3s-fs through the S3 API, then the local directory."""
    if request.param == "s3":
        return S3Store(request.getfixturevalue("s3_server"))
    return FileStore(tmp_path)


def start(portico_on_file, directory, text, env=None):
    """Writes `text` to `directory/portico.toml` and runs Portico on it; returns
    (process, Api on its public listener, admin base URL)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "portico.toml"
    path.write_text(text)
    return running(portico_on_file(path, env=env))


def running(proc):
    return proc, Api(proc.listening["public"]), f"http://{proc.listening['admin']}"


# --- HTTP ---------------------------------------------------------------------------------------

class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {dict(self.headers)} {self.body[:500]!r}>"


class Api:
    """Plain HTTP/1.1 to one listener over a kept-alive connection, with the project token
    unless `token=None` is passed."""

    def __init__(self, address):
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.conn = None

    def request(self, method, path, body=None, headers=None, token=TOKEN):
        headers = dict(headers or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        # Reads are retried once on a fresh connection (the server may close an idle one);
        # writes are not, so a job is never submitted twice by the test itself.
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                reply = Reply(response.status, response.headers, response.read())
                if reply.status >= 400:
                    # Portico may close after refusing a request (e.g. an unread body).
                    self.conn.close()
                    self.conn = None
                return reply
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if method != "GET" or attempt == 2:
                    raise

    def status(self, request_id):
        reply = self.request("GET", STATUS + request_id)
        assert reply.status == 200, reply
        return reply.json()


def chat(index=0, **extra):
    """A chat request whose answer has exactly `1 + index % 7` tokens, so each result can be
    matched to its request."""
    return {"model": "fake-model", "messages": [{"role": "user", "content": f"job {index}"}],
            "max_tokens": 1 + index % 7, **extra}


def submit(api, store, body, path=PREFIX + ROUTE, headers=None):
    """Submits one job and checks the 202 of DESIGN.md §5; returns its request id."""
    reply = api.request("POST", path, body, headers)
    assert reply.status == 202, reply
    doc = reply.json()
    request_id = doc["request_id"]
    assert uuid.UUID(request_id).version == 7, doc
    assert doc["status"] == "queued", doc
    assert doc["response_location"] == store.location(request_id), doc
    assert reply.headers["Location"] == STATUS + request_id, reply
    return request_id


def wait_terminal(api_of, ids, seconds):
    """Polls the status API until every id is completed, failed or expired; returns
    {id: status document}. `api_of()` gives the Api to ask (it may change on restart)."""
    done, pending = {}, list(ids)
    deadline = time.monotonic() + seconds
    while pending:
        api = api_of()
        for request_id in pending:
            doc = api.status(request_id)
            if doc["status"] in TERMINAL:
                done[request_id] = doc
        pending = [request_id for request_id in pending if request_id not in done]
        if pending and time.monotonic() > deadline:
            sample = {i: api.status(i)["status"] for i in pending[:5]}
            raise AssertionError(f"{len(pending)} of {len(ids)} jobs not finished: {sample}")
        if pending:
            time.sleep(0.1)
    return done


def wait_for(what, predicate, seconds):
    """Polls `predicate()` until it returns a true value, which is returned."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def completions_seen(worker):
    """How many chat completions reached the fake worker."""
    return sum(1 for r in get_json(worker + "/_fake/requests")
               if r["method"] == "POST" and r["path"] == ROUTE)


SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(admin, name, **labels):
    """The sum of the samples of `name` on the admin /metrics whose labels include `labels`;
    None when there is no such sample."""
    with urllib.request.urlopen(admin + "/metrics", timeout=10) as response:
        text = response.read().decode()
    total = None
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match[1] != name:
            continue
        found = dict(LABEL.findall(match[2] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total = (total or 0) + float(match[3])
    return total


def check_completed(store, request_id, doc, index):
    """The status document says completed and the result at the announced location holds
    the worker's chat completion for request `index`."""
    assert set(doc) == STATUS_KEYS, doc
    assert doc["request_id"] == request_id and doc["status"] == "completed", doc
    assert doc["response_location"] == store.location(request_id), doc
    assert doc["attempts"] >= 1, doc
    result = store.read(request_id)
    assert set(result) == RESULT_KEYS, result
    assert result["request_id"] == request_id, result
    assert (result["endpoint"], result["route"]) == ("chat", ROUTE), result
    assert (result["status"], result["status_code"]) == ("completed", 200), result
    assert result["error"] is None, result
    assert result["attempts"] >= 1 and result["started_at"] and result["completed_at"], result
    body = result["body"]
    assert isinstance(body, dict) and body["object"] == "chat.completion", result
    assert body["choices"][0]["message"]["role"] == "assistant", result
    assert body["usage"]["completion_tokens"] == 1 + index % 7, result
    return result


# --- the happy path -----------------------------------------------------------------------------

def test_fifty_jobs_complete_with_results_at_the_announced_location(
        store, fakeworker, portico_on_file, tmp_path):
    """50 jobs (half on the route, half under `/v1/async/`) get 202 with a UUID v7 and the
    exact result location; all complete; each result holds that request's chat completion,
    readable with boto3 (S3) or from disk (file://); the metrics count them."""
    worker = fakeworker("--ttft-ms", "20")
    _, api, admin = start(portico_on_file, tmp_path, config(store, static_workers(worker)),
                          env=store.env)
    paths = [PREFIX + ROUTE, PREFIX + EXPLICIT]
    ids = [submit(api, store, chat(i), path=paths[i % 2]) for i in range(50)]
    assert len(set(ids)) == 50
    done = wait_terminal(lambda: api, ids, 60)
    for index, request_id in enumerate(ids):
        check_completed(store, request_id, done[request_id], index)
    assert store.names() == sorted(f"{i}.json" for i in ids)
    assert completions_seen(worker) == 50
    assert metric(admin, "portico_async_jobs_total", endpoint="chat", outcome="completed") == 50
    assert metric(admin, "portico_async_job_duration_seconds_count") == 50
    wait_for("queue depth 0",
             lambda: metric(admin, "portico_async_queue_depth", endpoint="chat") == 0, 10)


# --- crashes and replicas -----------------------------------------------------------------------

def progress(store, at_least, seconds):
    """Waits until at least `at_least` results exist; returns how many do."""
    return wait_for(f"{at_least} results", lambda: (n := len(store.names())) >= at_least and n,
                    seconds)


def test_kill_9_twice_loses_no_job(portico_on_file, tmp_path):
    """200 jobs on the embedded queue survive two `kill -9`s of Portico mid-way: after each
    restart on the same state_dir the rest is processed, and every id ends completed with
    exactly one result object."""
    store = FileStore(tmp_path)
    text = config(store, process_workers("--ttft-ms", "150"),
                  scaling={"min_workers": 1, "max_workers": 1})
    proc, api, _ = start(portico_on_file, tmp_path, text)
    ids = [submit(api, store, chat(i)) for i in range(200)]
    for at_least in (50, 120):
        done_at_kill = progress(store, at_least, 60)
        proc.stop()
        assert done_at_kill < 200, "the jobs finished before the crash: make them slower"
        proc, api, _ = running(portico_on_file(proc.config))
    done = wait_terminal(lambda: api, ids, 90)
    results = [check_completed(store, i, done[i], index) for index, i in enumerate(ids)]
    assert store.names() == sorted(f"{i}.json" for i in ids)
    assert_redelivered(results)


def assert_redelivered(results):
    """Some job was in flight when its replica died and ran again: its claims count."""
    assert any(result["attempts"] >= 2 for result in results), (
        "no job was redelivered: the kill caught none in flight, or attempts miss redeliveries")


def test_redis_queue_shared_by_two_replicas_survives_losing_one(
        redis_server, s3_server, fakeworker, portico_on_file, tmp_path):
    """Two replicas share one Redis queue and one S3 store; 200 jobs are submitted to both
    alternately; one replica is killed mid-way; the survivor reclaims its jobs, answers the
    status of all 200 (status lives in Redis), and each has exactly one result."""
    store = S3Store(s3_server)
    worker = fakeworker("--ttft-ms", "100")
    text = config(store, static_workers(worker),
                  asynchronous={"queue": redis_server.url, "reclaim_after_seconds": 3})
    doomed, doomed_api, _ = start(portico_on_file, tmp_path / "a", text, env=store.env)
    _, survivor, _ = start(portico_on_file, tmp_path / "b", text, env=store.env)
    ids = [submit([doomed_api, survivor][i % 2], store, chat(i)) for i in range(200)]
    done_at_kill = progress(store, 50, 60)
    doomed.stop()
    assert done_at_kill < 200, "the jobs finished before the crash: make them slower"
    done = wait_terminal(lambda: survivor, ids, 90)
    results = [check_completed(store, i, done[i], index) for index, i in enumerate(ids)]
    assert store.names() == sorted(f"{i}.json" for i in ids)
    assert_redelivered(results)


# --- worker failures, expiry, store outage ------------------------------------------------------

def test_flaky_worker_jobs_complete_after_retries(fakeworker, portico_on_file, tmp_path):
    """With a worker failing half its requests, every job still completes; some needed
    retries, and the attempts recorded add up to what the worker received."""
    store = FileStore(tmp_path)
    worker = fakeworker("--error-rate", "0.5")
    # 0.5^14: a job failing every attempt is a one-in-16,000 event.
    _, api, _ = start(portico_on_file, tmp_path,
                      config(store, static_workers(worker), asynchronous={"max_attempts": 14}))
    ids = [submit(api, store, chat(i)) for i in range(10)]
    done = wait_terminal(lambda: api, ids, 90)
    results = [check_completed(store, i, done[i], index) for index, i in enumerate(ids)]
    assert any(result["attempts"] > 1 for result in results), results
    for request_id, result in zip(ids, results):
        assert done[request_id]["attempts"] == result["attempts"]
    assert completions_seen(worker) == sum(result["attempts"] for result in results)


def test_failing_worker_gives_failed_after_max_attempts(fakeworker, portico_on_file, tmp_path):
    """A worker that always answers 500 gets exactly max_attempts (3) tries per job; the job
    ends failed with status_code 500 and the error recorded; a worker's 4xx is a completed
    result, not retried."""
    store = FileStore(tmp_path)
    worker = fakeworker("--error-rate", "1.0")
    _, api, admin = start(portico_on_file, tmp_path, config(store, static_workers(worker)))
    ids = [submit(api, store, chat(i)) for i in range(2)]
    client_error = submit(api, store, {"x": 1}, path=PREFIX + "/status/404")
    done = wait_terminal(lambda: api, [*ids, client_error], 60)
    for request_id in ids:
        assert (done[request_id]["status"], done[request_id]["attempts"]) == ("failed", 3)
        result = store.read(request_id)
        assert set(result) == RESULT_KEYS, result
        assert (result["status"], result["status_code"], result["attempts"]) == (
            "failed", 500, 3), result
        assert result["error"], result
    assert completions_seen(worker) == 6
    assert metric(admin, "portico_async_jobs_total", endpoint="chat", outcome="failed") == 2
    result = store.read(client_error)
    assert (result["status"], result["status_code"], result["attempts"]) == (
        "completed", 404, 1), result


def test_job_waiting_past_ttl_expires(portico_on_file, tmp_path):
    """Jobs whose worker never becomes ready end expired after ttl_seconds, with an expired
    result written and counted."""
    store = FileStore(tmp_path)
    workers = process_workers("--boot-delay-ms", "600000", startup_timeout_seconds=600)
    text = config(store, workers, scaling={"min_workers": 0, "max_workers": 1},
                  asynchronous={"ttl_seconds": 2})
    _, api, admin = start(portico_on_file, tmp_path, text)
    ids = [submit(api, store, chat(i)) for i in range(2)]
    done = wait_terminal(lambda: api, ids, 30)
    for request_id in ids:
        assert done[request_id]["status"] == "expired", done[request_id]
        result = store.read(request_id)
        assert set(result) == RESULT_KEYS, result
        assert (result["request_id"], result["status"]) == (request_id, "expired"), result
    assert metric(admin, "portico_async_jobs_total", endpoint="chat", outcome="expired") == 2


def test_store_outage_delays_results_but_loses_none(
        s3_server, fakeworker, portico_on_file, tmp_path):
    """s3s-fs killed while jobs complete: the failed writes are counted and retried, and
    once it is back at the same address every job's result arrives."""
    store = S3Store(s3_server)
    worker = fakeworker("--ttft-ms", "100")
    _, api, admin = start(portico_on_file, tmp_path, config(store, static_workers(worker)),
                          env=store.env)
    ids = [submit(api, store, chat(i)) for i in range(40)]
    progress(store, 5, 30)
    s3_server.stop()
    wait_for("a failed result write",
             lambda: (metric(admin, "portico_async_result_write_errors_total") or 0) > 0, 30)
    assert len(ids) > sum(1 for i in ids if api.status(i)["status"] in TERMINAL)
    s3_server.start()
    done = wait_terminal(lambda: api, ids, 90)
    for index, request_id in enumerate(ids):
        check_completed(store, request_id, done[request_id], index)
    assert store.names() == sorted(f"{i}.json" for i in ids)


# --- the HTTP contract --------------------------------------------------------------------------

@pytest.fixture
def gateway(fakeworker, portico_on_file, tmp_path, webhooks):
    """Portico with endpoints `chat` and `fenced` on one fake worker, file results, and
    webhooks allowed to the test's receiver only: a namespace of api, admin, worker, store."""
    store = FileStore(tmp_path)
    worker = fakeworker()
    text = config(store, static_workers(worker), fenced=True,
                  asynchronous={"webhook_allow": [webhooks.url + "/"]})
    _, api, admin = start(portico_on_file, tmp_path, text)
    return types.SimpleNamespace(api=api, admin=admin, worker=worker, store=store)


class Webhooks(http.server.ThreadingHTTPServer):
    """Records each POST it receives as (path, headers, JSON body)."""

    def __init__(self):
        self.received = queue.Queue()
        super().__init__(("127.0.0.1", 0), WebhookHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class WebhookHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.put((self.path, dict(self.headers), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhooks():
    """A webhook receiver on a free loopback port."""
    server = Webhooks()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_idempotency_key_returns_the_same_job(gateway):
    """The same Idempotency-Key twice gives the same request id and one job; another key
    gives another job."""
    api, store = gateway.api, gateway.store
    first = submit(api, store, chat(1), headers={"Idempotency-Key": "k"})
    again = api.request("POST", PREFIX + ROUTE, chat(1), {"Idempotency-Key": "k"})
    assert again.status == 202, again
    assert again.json()["request_id"] == first
    assert again.headers["Location"] == STATUS + first
    other = submit(api, store, chat(2), headers={"Idempotency-Key": "other"})
    assert other != first
    wait_terminal(lambda: api, [first, other], 30)
    wait_for("queue depth 0",
             lambda: metric(gateway.admin, "portico_async_queue_depth", endpoint="chat") == 0, 10)
    assert completions_seen(gateway.worker) == 2
    assert metric(gateway.admin, "portico_async_jobs_total", endpoint="chat",
                  outcome="completed") == 2


@pytest.mark.parametrize("via", ["body", "header"])
def test_allowed_webhook_gets_the_status_document(gateway, webhooks, via):
    """A webhook_url (body field or X-Webhook-Url) matching webhook_allow receives the
    completed status document, and the worker sees neither the field nor the header."""
    url = webhooks.url + "/hook?x=1"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    headers = {}
    if via == "body":
        body["webhook_url"] = url
    else:
        headers["X-Webhook-Url"] = url
    request_id = submit(gateway.api, gateway.store, body, path=PREFIX + "/echo", headers=headers)
    path, _, doc = webhooks.received.get(timeout=30)
    assert path == "/hook?x=1"
    assert doc["request_id"] == request_id and doc["status"] == "completed", doc
    assert STATUS_KEYS <= set(doc), doc
    result = gateway.store.read(request_id)
    echoed = result["body"]
    assert json.loads(echoed["body"]) == {"messages": [{"role": "user", "content": "hi"}]}
    assert "x-webhook-url" not in {name.lower() for name, _ in echoed["headers"]}, echoed


@pytest.mark.parametrize("via", ["body", "header"])
@pytest.mark.parametrize("target", ["http://127.0.0.1:1/hook", "http://169.254.169.254/"])
def test_webhook_outside_the_allow_list_is_refused_at_intake(gateway, via, target):
    """A webhook target not in webhook_allow is a 400 at intake (no request forgery)."""
    body, headers = chat(), {}
    if via == "body":
        body["webhook_url"] = target
    else:
        headers["X-Webhook-Url"] = target
    reply = gateway.api.request("POST", PREFIX + ROUTE, body, headers)
    assert_error(reply, 400)


def assert_error(reply, status):
    assert reply.status == status, reply
    error = reply.json()["error"]
    assert {"message", "type", "code"} <= set(error), reply


@pytest.mark.parametrize("path", [PREFIX + ROUTE, PREFIX + EXPLICIT])
def test_get_on_an_async_route_is_405(gateway, path):
    """GET on an async route is 405 with `Allow: POST, OPTIONS`."""
    reply = gateway.api.request("GET", path)
    assert_error(reply, 405)
    assert {m.strip() for m in reply.headers["Allow"].split(",")} == {"POST", "OPTIONS"}


def test_options_answers_cors_preflight_without_a_token(gateway):
    """OPTIONS on an async route answers a CORS preflight; no token needed."""
    reply = gateway.api.request("OPTIONS", PREFIX + ROUTE, token=None, headers={
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert 200 <= reply.status < 300, reply
    allowed = reply.headers.get("Access-Control-Allow-Methods", "")
    assert "POST" in {m.strip() for m in allowed.split(",")}, reply


def test_options_with_cors_origins_answers_listed_origins_only(
        fakeworker, portico_on_file, tmp_path):
    """With `cors_origins`, a preflight on an async route from a listed origin is answered
    before the token; from another origin it is an ordinary request: 401 without a token,
    and with one `204` with the path's `Allow` and no CORS header (never a 405 that lists
    OPTIONS as allowed)."""
    store = FileStore(tmp_path)
    text = config(store, static_workers(fakeworker()), cors_origins=["http://app.example"])
    _, api, _ = start(portico_on_file, tmp_path, text)

    def preflight(origin, token=None):
        return api.request("OPTIONS", PREFIX + ROUTE, token=token, headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
        })

    listed = preflight("http://app.example")
    assert listed.status == 204, listed
    assert listed.headers["Access-Control-Allow-Origin"] == "http://app.example", listed
    assert_error(preflight("http://elsewhere.example"), 401)
    other = preflight("http://elsewhere.example", token=TOKEN)
    assert other.status == 204, other
    assert {m.strip() for m in other.headers["Allow"].split(",")} == {"POST", "OPTIONS"}
    assert "Access-Control-Allow-Origin" not in other.headers, other
    status = api.request("OPTIONS", STATUS + str(uuid.uuid4()))
    assert status.status == 204, status
    assert status.headers["Allow"] == "GET, OPTIONS", status


def test_intake_refuses_what_it_cannot_queue(gateway):
    """Oversize body → 413, malformed JSON → 400, no or bad token → 401 (intake and status),
    unknown id → 404, security group → 403 (intake and status); nothing reaches the
    worker."""
    api = gateway.api
    huge = chat(padding="x" * 70_000)
    assert_error(api.request("POST", PREFIX + ROUTE, huge), 413)
    malformed = api.request("POST", PREFIX + ROUTE, b'{"model": ',
                            {"Content-Type": "application/json"})
    assert_error(malformed, 400)
    assert_error(api.request("POST", PREFIX + ROUTE, chat(), token=None), 401)
    assert_error(api.request("POST", PREFIX + ROUTE, chat(), token="ptk_" + "0" * 64), 401)
    request_id = submit(api, gateway.store, chat())
    assert_error(api.request("GET", STATUS + request_id, token=None), 401)
    assert_error(api.request("GET", STATUS + str(uuid.uuid4())), 404)
    wrong_method = api.request("POST", STATUS + request_id, chat())
    assert_error(wrong_method, 405)
    assert wrong_method.headers["Allow"] == "GET, OPTIONS", wrong_method
    long_key = api.request("POST", PREFIX + ROUTE, chat(), {"Idempotency-Key": "k" * 3000})
    assert_error(long_key, 400)
    assert long_key.json()["error"]["code"] == "invalid_header", long_key
    not_a_string = api.request("POST", PREFIX + ROUTE, chat(webhook_url=7))
    assert_error(not_a_string, 400)
    assert not_a_string.json()["error"]["code"] == "invalid_webhook_url", not_a_string
    fenced = "/project/p1/endpoint/fenced"
    assert_error(api.request("POST", fenced + ROUTE, chat()), 403)
    assert_error(api.request("GET", fenced + "/v1/async/status/" + request_id), 403)
    wait_terminal(lambda: api, [request_id], 30)
    assert completions_seen(gateway.worker) == 1


# --- scaling ------------------------------------------------------------------------------------

def test_job_wakes_an_endpoint_at_zero_and_it_returns_to_zero(portico_on_file, tmp_path):
    """With no worker running, queued jobs start one and complete; once the queue is empty
    the endpoint scales back to zero."""
    store = FileStore(tmp_path)
    text = config(store, process_workers("--boot-delay-ms", "500"),
                  scaling={"min_workers": 0, "max_workers": 1, "idle_timeout_seconds": 2,
                           "initial_cooldown_seconds": 1})
    _, api, admin = start(portico_on_file, tmp_path, text)
    endpoint = admin + "/admin/endpoints/chat"
    assert get_json(endpoint)["workers"]["ready"] == 0
    ids = [submit(api, store, chat(i)) for i in range(3)]
    done = wait_terminal(lambda: api, ids, 30)
    for index, request_id in enumerate(ids):
        check_completed(store, request_id, done[request_id], index)
    wait_for("scale to zero", lambda: (w := get_json(endpoint)["workers"])["ready"] == 0
             and not w["replicas"], 30)


def admin_post(admin, path):
    request = urllib.request.Request(admin + path, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_backlog_scales_up_and_a_stopped_endpoint_refuses_jobs(portico_on_file, tmp_path):
    """Waiting jobs are demand: a backlog on one slow worker brings the second one, the
    admin API shows the jobs, and a stopped endpoint answers 503 to new jobs while their
    status stays readable."""
    store = FileStore(tmp_path)
    text = config(store, process_workers("--ttft-ms", "300"),
                  scaling={"min_workers": 1, "max_workers": 2, "target": 2,
                           "idle_timeout_seconds": 60, "initial_cooldown_seconds": 60},
                  asynchronous={"concurrency_per_worker": 1})
    _, api, admin = start(portico_on_file, tmp_path, text)
    endpoint = admin + "/admin/endpoints/chat"
    wait_for("one ready worker", lambda: get_json(endpoint)["workers"]["ready"] == 1, 30)
    ids = [submit(api, store, chat(i)) for i in range(20)]
    assert get_json(endpoint)["async_jobs"] > 0
    # One slot and a 300 ms answer: 19 waiting jobs ask for ceil(20 / 2) > 1 workers.
    wait_for("a second worker", lambda: get_json(endpoint)["workers"]["ready"] == 2, 30)
    wait_terminal(lambda: api, ids, 60)
    wait_for("no async jobs", lambda: get_json(endpoint)["async_jobs"] == 0, 10)

    admin_post(admin, "/admin/endpoints/chat/stop")
    refused = api.request("POST", PREFIX + ROUTE, chat())
    assert_error(refused, 503)
    assert refused.json()["error"]["code"] == "endpoint_stopped", refused
    assert api.status(ids[0])["status"] == "completed"
    admin_post(admin, "/admin/endpoints/chat/start")
    submit(api, store, chat())
