"""The official openai SDK consumes fakeworker's chat and text completions, streaming or not."""

import time

import openai
import pytest


def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_chat_completion_non_streaming(fakeworker):
    """A plain chat completion has the OpenAI shape, with usage and the requested length."""
    api = client(fakeworker("--output-tokens", "12"))
    reply = api.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "say something please"}],
        max_tokens=5,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert len(reply.choices[0].message.content.split()) == 5
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens == 3
    assert reply.usage.total_tokens == 8


def test_chat_completion_streaming_arrives_spread_out(fakeworker):
    """Streamed chunks arrive one by one as generated (20 tokens/s), ending with usage."""
    api = client(fakeworker("--tokens-per-second", "20"))
    stream = api.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "count"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, text, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    assert len("".join(text).split()) == 8
    assert usage is not None and usage.completion_tokens == 8
    # Eight tokens at 20/s span about 350 ms; a buffered body would arrive in one lump.
    assert arrivals[-1] - arrivals[0] > 0.2
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert sum(1 for gap in gaps if gap > 0.02) >= 5


def test_text_completion(fakeworker):
    """The legacy completions API works too, streaming and not."""
    api = client(fakeworker())
    reply = api.completions.create(model="fake-model", prompt="once upon", max_tokens=4)
    assert reply.object == "text_completion"
    assert len(reply.choices[0].text.split()) == 4
    chunks = list(api.completions.create(model="fake-model", prompt="x", max_tokens=3, stream=True))
    assert len("".join(c.choices[0].text for c in chunks if c.choices).split()) == 3


def test_bad_request_is_an_openai_error(fakeworker):
    """Malformed messages get an OpenAI-shaped 400 that the SDK raises as such."""
    api = client(fakeworker())
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model="fake-model", messages="not a list")
    assert err.value.status_code == 400
