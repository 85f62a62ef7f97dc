"""The official openai SDK through Portico gets what it gets from the worker directly."""

import time

import openai
import pytest

ENDPOINT = "/project/p1/endpoint/e1"


def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


def clients(fakeworker, portico, *flags):
    """(direct, through portico) clients for one fakeworker started with `flags`."""
    worker = fakeworker(*flags)
    return client(worker), client(portico(worker) + ENDPOINT)


def comparable(reply):
    """A reply as a dict without what differs between two answers of the same worker."""
    data = reply.model_dump()
    for key in ("id", "created", "sent_at_us"):
        data.pop(key, None)
    return data


def stream(api, **kwargs):
    """Streams a chat completion: (chunks, arrival times)."""
    chunks, arrivals = [], []
    for chunk in api.chat.completions.create(stream=True, **kwargs):
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    return chunks, arrivals


def content(chunks):
    return "".join(
        choice.delta.content or "" for chunk in chunks for choice in chunk.choices
    )


def usage(chunks):
    found = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert len(found) == 1, found
    return found[0].model_dump()


def test_chat_completion_same_as_direct(fakeworker, portico):
    """A whole chat completion through Portico equals the worker's own answer."""
    direct, proxied = clients(fakeworker, portico)
    request = dict(
        model="fake-model",
        messages=[{"role": "user", "content": "say something please"}],
        max_tokens=7,
    )
    via_worker = direct.chat.completions.create(**request)
    via_portico = proxied.chat.completions.create(**request)
    assert comparable(via_portico) == comparable(via_worker)
    assert via_portico.object == "chat.completion"
    assert via_portico.usage.completion_tokens == 7
    assert len(via_portico.choices[0].message.content.split()) == 7


def test_chat_stream_same_as_direct_and_spread_out(fakeworker, portico):
    """A streamed chat completion through Portico has the worker's chunks, text and usage,
    and the chunks arrive spread out as the worker generates them (20 tokens/s)."""
    direct, proxied = clients(fakeworker, portico, "--tokens-per-second", "20")
    request = dict(
        model="fake-model",
        messages=[{"role": "user", "content": "count slowly"}],
        max_tokens=12,
        stream_options={"include_usage": True},
    )
    worker_chunks, _ = stream(direct, **request)
    chunks, arrivals = stream(proxied, **request)

    assert len(chunks) == len(worker_chunks)
    assert [comparable(c) for c in chunks] == [comparable(c) for c in worker_chunks]
    assert content(chunks) == content(worker_chunks)
    assert len(content(chunks).split()) == 12
    assert usage(chunks) == usage(worker_chunks)
    assert usage(chunks)["completion_tokens"] == 12
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]

    # The worker stamps each chunk as it hands it over; through Portico they must arrive
    # spread over (most of) the same time, not in one lump at the end.
    sent = [c.model_extra["sent_at_us"] / 1e6 for c in chunks]
    sent_span = sent[-1] - sent[0]
    assert sent_span > 0.4, sent_span
    assert arrivals[-1] - arrivals[0] >= 0.6 * sent_span
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert sum(1 for gap in gaps if gap > 0.02) >= 8


def test_text_completion_same_as_direct(fakeworker, portico):
    """The legacy completions API through Portico, whole and streamed, equals the worker's."""
    direct, proxied = clients(fakeworker, portico)
    request = dict(model="fake-model", prompt="once upon a time", max_tokens=4)
    assert comparable(proxied.completions.create(**request)) == comparable(
        direct.completions.create(**request)
    )
    via_worker = list(direct.completions.create(stream=True, **request))
    via_portico = list(proxied.completions.create(stream=True, **request))
    assert [comparable(c) for c in via_portico] == [comparable(c) for c in via_worker]


def test_models_same_as_direct(fakeworker, portico):
    """`GET /v1/models` through Portico lists the worker's model."""
    direct, proxied = clients(fakeworker, portico, "--model", "my-model")
    assert [m.id for m in proxied.models.list()] == [m.id for m in direct.models.list()]
    assert [m.id for m in proxied.models.list()] == ["my-model"]


def test_worker_errors_pass_through(fakeworker, portico):
    """A request the worker rejects gets the worker's own OpenAI error through Portico."""
    direct, proxied = clients(fakeworker, portico)
    errors = []
    for api in (direct, proxied):
        with pytest.raises(openai.BadRequestError) as err:
            api.chat.completions.create(model="fake-model", messages="not a list")
        errors.append(err.value)
    assert errors[1].status_code == 400
    assert errors[1].body == errors[0].body


def test_unknown_endpoint_is_an_openai_error(fakeworker, portico):
    """An unknown endpoint is a 404 in OpenAI's error shape, which the SDK raises as such."""
    base = portico(fakeworker())
    api = client(base + "/project/p1/endpoint/nope")
    with pytest.raises(openai.NotFoundError) as err:
        api.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 404
    assert err.value.code == "endpoint_not_found"
    assert err.value.type == "not_found_error"
    assert err.value.response.headers.get("x-request-id")
