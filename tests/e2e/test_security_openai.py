"""Project tokens, security groups and TLS listeners, seen through the clients users use:
the official openai SDK, a plain HTTP client, Python's `ssl` and websocket-client."""

import hashlib
import http.client
import json
import secrets
import socket
import ssl
import time
import urllib.request
import warnings

import httpx2
import openai
import pytest
import websocket

ENDPOINT = "/project/p/endpoint/e"
FENCED = "/project/p/endpoint/fenced"
CHAT = [{"role": "user", "content": "tell me a secret"}]
LOG_SECONDS = 10

CONFIG = """
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 1
access_log = "access.log"

[[listener]]
name = "{listener}"
address = "127.0.0.1:0"
{tls}

[[project]]
id = "p"
tokens = [{{ name = "ci", sha256 = "{sha256}" }}]

[[security_group]]
id = "sg"
inbound = [{{ protocol = "tcp", source = "127.0.0.2/32" }}]

[[endpoint]]
id = "e"
project = "p"
timeouts = {{ connect_ms = 1000, first_byte_seconds = 30, idle_seconds = 30 }}

[endpoint.workers]
kind = "static"
urls = ["{worker}"]

# Only 127.0.0.2 may call it; the tests call from 127.0.0.1.
[[endpoint]]
id = "fenced"
project = "p"
security_groups = ["sg"]

[endpoint.workers]
kind = "static"
urls = ["{worker}"]
"""


def new_token():
    """A token shaped like `portico token new` prints, fresh for each test."""
    return "ptk_" + secrets.token_hex(32)


def start(portico_from_config, worker, token, tls=None, log="info"):
    """Runs Portico with project `p` (token `ci` = `token`), endpoint `e` on `worker` and
    endpoint `fenced` behind a security group; one listener, `tls` when `tls` (the
    `tls_certs` paths) is given, else `public`; `log` is `PORTICO_LOG`. Returns (process,
    listener `IP:PORT`)."""
    listener = "tls" if tls else "public"
    text = CONFIG.format(
        listener=listener,
        tls=f'tls = {{ cert = "{tls.cert}", key = "{tls.key}" }}' if tls else "",
        sha256=hashlib.sha256(token.encode()).hexdigest(),
        worker=worker,
    )
    proc = portico_from_config(text, listeners=(listener,), env={"PORTICO_LOG": log})
    return proc, proc.listening[listener]


def sdk(base_url, api_key, **options):
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30, **options)


def comparable(reply):
    """A reply as a dict without what differs between two answers of the same worker."""
    data = reply.model_dump()
    for key in ("id", "created", "sent_at_us"):
        data.pop(key, None)
    return data


def access_log(path, predicate, count):
    """The access-log lines at `path` that match `predicate`, once there are `count` of them.
    Lines are written in batches, per data-plane thread, so this polls with a deadline and
    their order is not the order of the requests."""
    deadline = time.monotonic() + LOG_SECONDS
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        matching = [line for line in lines if predicate(line)]
        if len(matching) >= count:
            return matching
        if time.monotonic() > deadline:
            raise AssertionError(f"wanted {count} matching access-log lines, got: {lines}")
        time.sleep(0.02)


def raw_post(address, path, headers):
    """POSTs a chat request with exactly `headers` (no SDK): (status, headers, JSON body)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = json.dumps({"model": "fake-model", "messages": CHAT}).encode()
        headers = {"Content-Type": "application/json", **headers}
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        conn.close()


def recorded(worker):
    """What reached the fake worker: its `/_fake/requests` list."""
    with urllib.request.urlopen(worker + "/_fake/requests", timeout=10) as response:
        return json.load(response)


def authorizations(requests):
    return {
        value for request in requests for name, value in request["headers"]
        if name.lower() == "authorization"
    }


def test_sdk_with_project_token_gets_the_workers_answer(fakeworker, portico_from_config, tmp_path):
    """The openai SDK with a project token as its api_key gets the worker's own chat
    completion, whole and streamed; the access log names the caller `ci`, and the token is
    in nothing Portico wrote nor in anything the worker received."""
    token = new_token()
    worker = fakeworker()
    # The most verbose logging an operator could turn on must not show the token either.
    gateway, address = start(portico_from_config, worker, token, log="trace")
    direct = sdk(worker + "/v1", "direct-key")
    proxied = sdk(f"http://{address}{ENDPOINT}/v1", token)
    request = dict(model="fake-model", messages=CHAT, max_tokens=5)

    whole = proxied.chat.completions.create(**request)
    assert comparable(whole) == comparable(direct.chat.completions.create(**request))
    assert len(whole.choices[0].message.content.split()) == 5

    streamed = dict(request, stream=True, stream_options={"include_usage": True})
    chunks = list(proxied.chat.completions.create(**streamed))
    worker_chunks = list(direct.chat.completions.create(**streamed))
    assert [comparable(c) for c in chunks] == [comparable(c) for c in worker_chunks]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5

    lines = access_log(tmp_path / "access.log", lambda line: line.get("endpoint") == "e", 2)
    assert [(line["caller"], line["status"], line["project"]) for line in lines] == [
        ("ci", 200, "p"),
        ("ci", 200, "p"),
    ]

    # Portico strips its credential before forwarding: the worker only ever saw the key the
    # direct client sent it.
    reached = recorded(worker)
    assert authorizations(reached) == {"Bearer direct-key"}
    secret_part = token.removeprefix("ptk_")
    for where, text in {
        "access log": (tmp_path / "access.log").read_text(),
        "stdout": "\n".join(gateway.lines),
        "stderr": "\n".join(gateway.stderr),
        "worker": json.dumps(reached),
    }.items():
        assert secret_part not in text, f"the token leaked into portico's {where}"


def test_bad_or_missing_token_is_refused(fakeworker, portico_from_config, tmp_path):
    """A wrong api_key is an `openai.AuthenticationError` (401 invalid_token); no token, a
    non-Bearer Authorization and a token in the query string are 401s with a Bearer
    challenge; none of them reaches the worker."""
    token = new_token()
    worker = fakeworker()
    _, address = start(portico_from_config, worker, token)

    with pytest.raises(openai.AuthenticationError) as err:
        sdk(f"http://{address}{ENDPOINT}/v1", new_token()).chat.completions.create(
            model="fake-model", messages=CHAT
        )
    assert err.value.status_code == 401
    assert err.value.code == "invalid_token"
    assert err.value.type == "authentication_error"
    challenge = err.value.response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge

    # The SDK refuses to send a request without a key, so these go out as plain HTTP.
    with pytest.raises(openai.OpenAIError) as refused:
        sdk(f"http://{address}{ENDPOINT}/v1", "").chat.completions.create(
            model="fake-model", messages=CHAT
        )
    assert not isinstance(refused.value, openai.APIError), "the SDK sent it after all"
    path = ENDPOINT + "/v1/chat/completions"
    cases = [
        (path, {}, "missing_token"),
        (path, {"Authorization": "Basic Y2k6c2VjcmV0"}, "malformed_authorization"),
        (f"{path}?api_key={token}&token={token}&access_token={token}", {}, "missing_token"),
    ]
    for target, headers, code in cases:
        status, response_headers, body = raw_post(address, target, headers)
        assert status == 401, (target, headers, status, body)
        assert body["error"]["code"] == code, (target, headers, body)
        assert body["error"]["type"] == "authentication_error"
        assert response_headers["WWW-Authenticate"].startswith("Bearer ")

    lines = access_log(tmp_path / "access.log", lambda line: line.get("endpoint") == "e", 4)
    assert sorted((line["status"], line["caller"], line["error"]) for line in lines) == [
        (401, None, "invalid_token"),
        (401, None, "malformed_authorization"),
        (401, None, "missing_token"),
        (401, None, "missing_token"),
    ]
    assert token not in (tmp_path / "access.log").read_text()
    assert not [r for r in recorded(worker) if r["path"].startswith("/v1/")]


def test_security_group_denies_even_a_valid_token(fakeworker, portico_from_config, tmp_path):
    """An endpoint whose security group does not admit 127.0.0.1 answers the SDK with
    `openai.PermissionDeniedError` (403 denied_by_security_group), valid token or not,
    without a token challenge and without reaching the worker."""
    token = new_token()
    worker = fakeworker()
    _, address = start(portico_from_config, worker, token)

    for key in (token, new_token()):
        with pytest.raises(openai.PermissionDeniedError) as err:
            sdk(f"http://{address}{FENCED}/v1", key).chat.completions.create(
                model="fake-model", messages=CHAT
            )
        assert err.value.status_code == 403
        assert err.value.code == "denied_by_security_group"
        assert err.value.type == "permission_error"
        assert "www-authenticate" not in err.value.response.headers

    lines = access_log(tmp_path / "access.log", lambda line: line.get("endpoint") == "fenced", 2)
    assert [(line["status"], line["error"]) for line in lines] == [
        (403, "denied_by_security_group"),
        (403, "denied_by_security_group"),
    ]
    assert not [r for r in recorded(worker) if r["path"].startswith("/v1/")]


def test_sdk_over_https_trusts_only_the_test_ca(fakeworker, portico_from_config, tls_certs):
    """Over a TLS listener, the SDK with an HTTP client that trusts the test CA gets the
    worker's answer; the SDK with the system's trust store fails on the certificate."""
    token = new_token()
    worker = fakeworker()
    _, address = start(portico_from_config, worker, token, tls=tls_certs)
    base_url = f"https://localhost:{address.rsplit(':', 1)[1]}{ENDPOINT}/v1"
    request = dict(model="fake-model", messages=CHAT, max_tokens=4)

    trusting = ssl.create_default_context(cafile=str(tls_certs.ca))
    with httpx2.Client(verify=trusting) as http:
        reply = sdk(base_url, token, http_client=http).chat.completions.create(**request)
    assert comparable(reply) == comparable(
        sdk(worker + "/v1", "direct").chat.completions.create(**request)
    )
    assert len(reply.choices[0].message.content.split()) == 4

    with pytest.raises(openai.APIConnectionError) as err:
        sdk(base_url, token).chat.completions.create(**request)
    causes = []
    cause = err.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(
        isinstance(c, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(c)
        for c in causes
    ), [repr(c) for c in causes]


def tls_connect(address, context, server_hostname="localhost"):
    """Opens a TLS connection to `address` with `context`, handshake done."""
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def test_tls_listener_negotiates_h2(fakeworker, portico_from_config, tls_certs):
    """A client offering ALPN h2 and http/1.1 gets h2 over TLS 1.2+ with the test leaf
    certificate; one offering only http/1.1 gets http/1.1."""
    _, address = start(portico_from_config, fakeworker(), new_token(), tls=tls_certs)

    def context(*alpn):
        ctx = ssl.create_default_context(cafile=str(tls_certs.ca))
        ctx.set_alpn_protocols(list(alpn))
        return ctx

    with tls_connect(address, context("h2", "http/1.1")) as conn:
        assert conn.selected_alpn_protocol() == "h2"
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
        assert ("DNS", "localhost") in conn.getpeercert()["subjectAltName"]
    with tls_connect(address, context("http/1.1")) as conn:
        assert conn.selected_alpn_protocol() == "http/1.1"


def test_tls_listener_refuses_tls_1_1(fakeworker, portico_from_config, tls_certs):
    """A client that offers at most TLS 1.1 is refused by the server with an alert, while the
    same client allowed TLS 1.2 connects."""
    _, address = start(portico_from_config, fakeworker(), new_token(), tls=tls_certs)

    def client(maximum):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(tls_certs.ca))
        # Security level 0 keeps OpenSSL builds that drop TLS 1.1 at higher levels offering
        # it, so the refusal below is the server's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            # Asking for TLS 1.1 on purpose is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = maximum
        return ctx

    try:
        tls11 = client(ssl.TLSVersion.TLSv1_1)
    except (ValueError, ssl.SSLError) as err:
        # The only reason to skip: this Python/OpenSSL cannot be asked for TLS 1.1 at all.
        pytest.skip(f"this Python cannot offer TLS 1.1: {err}")
    with tls_connect(address, client(ssl.TLSVersion.TLSv1_2)) as conn:
        assert conn.version() == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as err:
        tls_connect(address, tls11).close()
    # An alert received from the server (rustls answers a hello that offers nothing newer
    # than TLS 1.1 with handshake_failure), not a refusal by the local OpenSSL.
    assert "ALERT" in str(err.value).upper(), err.value


def test_websocket_takes_the_token_from_the_header_only(fakeworker, portico_from_config, tmp_path):
    """websocket-client with the token only in the query string is refused at the handshake
    (401); with `Authorization: Bearer` it connects and gets its messages echoed; the
    access log names the session's caller and holds no token."""
    token = new_token()
    _, address = start(portico_from_config, fakeworker(), token)
    url = f"ws://{address}{ENDPOINT}/ws"

    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{url}?token={token}", timeout=10)
    assert err.value.status_code == 401
    assert json.loads(err.value.resp_body)["error"]["code"] == "missing_token"

    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=10)
    try:
        ws.send("hello through the gate")
        assert ws.recv() == "hello through the gate"
        ws.send_binary(b"\x00\x01\x02")
        assert ws.recv() == b"\x00\x01\x02"
    finally:
        ws.close()

    log = tmp_path / "access.log"
    lines = access_log(log, lambda line: line.get("endpoint") == "e", 2)
    assert sorted((line["status"], line["caller"] or "", line["path"]) for line in lines) == [
        (101, "ci", ENDPOINT + "/ws"),
        (401, "", ENDPOINT + "/ws"),
    ]
    assert token.removeprefix("ptk_") not in log.read_text()
