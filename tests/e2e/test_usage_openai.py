"""Token usage as the official openai SDK reports it, counted by Portico per caller: whole
and streamed chat completions (and a legacy completion) by two project tokens, then
`GET /admin/endpoints/{id}/access/hourly` shows the same numbers."""

import hashlib
import json
import secrets
import time
import urllib.request

import openai

ENDPOINT = "/project/p/endpoint/e"

CONFIG = """
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 1
state_dir = "state"

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p"
tokens = [{{ name = "alice", sha256 = "{alice}" }}, {{ name = "bob", sha256 = "{bob}" }}]

[[endpoint]]
id = "e"
project = "p"
timeouts = {{ connect_ms = 1000, first_byte_seconds = 30, idle_seconds = 30 }}

[endpoint.workers]
kind = "static"
urls = ["{worker}"]
"""


def new_token():
    return "ptk_" + secrets.token_hex(32)


def sha256(token):
    return hashlib.sha256(token.encode()).hexdigest()


def hourly(admin, hours=2):
    with urllib.request.urlopen(
        f"http://{admin}/admin/endpoints/e/access/hourly?hours={hours}", timeout=10
    ) as answer:
        assert answer.status == 200
        return json.load(answer)


def test_usage_per_caller_matches_the_sdk(fakeworker, portico_from_config):
    """Each caller's prompt and completion tokens in the hourly breakdown are the sums of
    the usage the SDK received; a stream without `include_usage` counts as a request with
    no tokens."""
    worker = fakeworker("--output-tokens", "5")
    alice, bob = new_token(), new_token()
    proc = portico_from_config(
        CONFIG.format(alice=sha256(alice), bob=sha256(bob), worker=worker)
    )
    base = f"http://{proc.listening['public']}{ENDPOINT}/v1"
    sdk = {
        name: openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
        for name, key in (("alice", alice), ("bob", bob))
    }
    expected = {name: {"requests": 0, "prompt": 0, "completion": 0} for name in sdk}

    def count(name, usage):
        expected[name]["requests"] += 1
        if usage is not None:
            expected[name]["prompt"] += usage.prompt_tokens
            expected[name]["completion"] += usage.completion_tokens

    def chat(name, text, max_tokens):
        reply = sdk[name].chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": text}],
            max_tokens=max_tokens,
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        count(name, reply.usage)

    def stream(name, text, max_tokens, include_usage=True):
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        chunks = list(
            sdk[name].chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": text}],
                max_tokens=max_tokens,
                stream=True,
                **options,
            )
        )
        found = [chunk.usage for chunk in chunks if chunk.usage is not None]
        assert len(found) == (1 if include_usage else 0), found
        count(name, found[0] if found else None)

    chat("alice", "hello there", 3)
    chat("alice", "a somewhat longer question with more words in it", 8)
    stream("alice", "stream me a story", 6)
    stream("bob", "bob streams", 4)
    stream("bob", "no usage asked for", 2, include_usage=False)
    chat("bob", "bob asks once", 1)
    legacy = sdk["bob"].completions.create(model="fake-model", prompt="one two three", max_tokens=2)
    count("bob", legacy.usage)

    total_requests = sum(e["requests"] for e in expected.values())
    deadline = time.monotonic() + 10
    while True:
        answer = hourly(proc.listening["admin"])
        if answer["total"]["requests"] == total_requests or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    total = answer["total"]
    assert total["requests"] == total_requests, answer
    assert total["errors"] == {"4xx": 0, "5xx": 0}
    assert total["usage"] == {
        "prompt_tokens": sum(e["prompt"] for e in expected.values()),
        "completion_tokens": sum(e["completion"] for e in expected.values()),
    }
    callers = {c["caller"]: c for c in total["callers"]}
    assert set(callers) == {"alice", "bob"}
    for name, want in expected.items():
        got = callers[name]
        assert (got["requests"], got["errors"]) == (want["requests"], 0), got
        assert (got["prompt_tokens"], got["completion_tokens"]) == (
            want["prompt"],
            want["completion"],
        ), got
    # Callers are listed by requests, most first.
    listed = [c["requests"] for c in total["callers"]]
    assert listed == sorted(listed, reverse=True)
    # The hours add up to the total.
    assert sum(h["usage"]["completion_tokens"] for h in answer["hours"]) == (
        total["usage"]["completion_tokens"]
    )
