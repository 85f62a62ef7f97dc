"""Scale to zero seen through the official openai SDK: a client calling an endpoint with no
worker running is held while Portico starts one, with `: waking` keep-alives on streams, and
gets an ordinary answer; stopped endpoints give the SDK a clean APIStatusError."""

import json
import os
import time
import urllib.request

import openai
import pytest

from conftest import binary

CONFIG = """
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 2

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p"

[[endpoint]]
id = "e"
project = "p"
public = true

[endpoint.workers]
kind = "process"
command = ["{fakeworker}", "--port", "{{port}}", "--boot-delay-ms", "{boot_ms}"]
startup_timeout_seconds = 30

[endpoint.scaling]
min_workers = 0
max_workers = 2
waking_keepalive_seconds = 1
"""


def start(portico_from_config, boot_ms):
    proc = portico_from_config(CONFIG.format(fakeworker=binary("fakeworker"), boot_ms=boot_ms))
    base = f"http://{proc.listening['public']}/project/p/endpoint/e/v1"
    admin = f"http://{proc.listening['admin']}/admin/endpoints/e"
    return proc, openai.OpenAI(base_url=base, api_key="unused", max_retries=0), admin


def admin_call(url, method="GET"):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_stream_through_a_cold_start(portico_from_config):
    """A streamed chat held through a 2.5 s boot arrives whole: the SDK skips the keep-alive
    comments, and the endpoint started exactly one worker."""
    _, client, admin = start(portico_from_config, 2500)
    assert admin_call(admin)["workers"]["ready"] == 0
    began = time.monotonic()
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert time.monotonic() - began >= 2.5
    assert len(text.split()) >= 5
    state = admin_call(admin)
    assert state["workers"]["ready"] == 1
    assert len(state["workers"]["replicas"]) == 1


def test_plain_call_through_a_cold_start(portico_from_config):
    """A non-streamed chat is held (no keep-alives: the body has to be one JSON document)."""
    _, client, _ = start(portico_from_config, 1500)
    answer = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_stopped_endpoint_is_a_clean_sdk_error(portico_from_config):
    """Stop answers 503 endpoint_stopped, which the SDK raises as an error with that code;
    start serves again. The worker process is gone after stop."""
    _, client, admin = start(portico_from_config, 0)
    client.models.list()
    pids = [r["pid"] for r in admin_call(admin)["workers"]["replicas"]]
    assert pids
    admin_call(admin + "/stop", "POST")
    with pytest.raises(openai.APIStatusError) as raised:
        client.models.list()
    assert raised.value.status_code == 503
    assert raised.value.body["code"] == "endpoint_stopped"
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "stopped workers still running"
        time.sleep(0.05)
    admin_call(admin + "/start", "POST")
    assert client.models.list().data


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_websocket_through_a_cold_start(portico_from_config):
    """A WebSocket upgrade to an endpoint at zero is held like any request, then relayed."""
    import websocket

    proc, _, admin = start(portico_from_config, 1500)
    url = f"ws://{proc.listening['public']}/project/p/endpoint/e/ws"
    began = time.monotonic()
    ws = websocket.create_connection(url, timeout=20)
    try:
        assert time.monotonic() - began >= 1.5
        ws.send("hello")
        assert ws.recv() == "hello"
        assert admin_call(admin)["inflight"] == 1
    finally:
        ws.close()
