"""A stream whose first token is late starts without it (``ingress.stream_start_s``).

A stream's headers used to go out with its first content, and nothing before: a proxy or load
balancer in front of the edge with a read timeout shorter than a first-token wait (nginx's
60 s, against a reasoning model or a turn in a saturated deployment's queue) cut the request
with a 504, which the SDKs retry, each retry a new provider call. Now the edge sends the
headers and an SSE comment once the first content is ``stream_start_s`` late, and a comment
every as many seconds until it comes; an error after that is the stream's error event.

Its own stack (``stream_start_s: 1``), the fake provider's ``slow:3500`` (the first chunk
after 3.5 s), read with raw HTTP and with the official SDKs.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio

from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

LATE = "late"  # its first chunk after 3.5 s
ON_TIME = "echo"
CHAT = {"messages": [{"role": "user", "content": "one two three"}], "stream": True}
RESPONSES = {"input": "one two three"}
MESSAGES = {"max_tokens": 32, "messages": [{"role": "user", "content": "one two three"}]}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def early(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {
            LATE: {"deployments": [{"provider": "fake", "model": "slow:3500"}]},
            ON_TIME: {"deployments": [{"provider": "fake", "model": "echo"}]},
        },
        "ingress": {"stream_start_s": 1},
    }
    stack = await start_stack(tmp_path_factory.mktemp("early"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _timed_stream(
    stack: Stack, path: str, doc: dict[str, Any], **given: str
) -> tuple[httpx.Response, float, list[tuple[float, bytes]]]:
    """The response, when its headers came, and each line of its body with when it came
    (seconds from the request)."""
    headers = {"Authorization": f"Bearer {stack.api_key}", **given}
    if path == "/v1/messages":
        headers["anthropic-version"] = "2023-06-01"
    began = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http,
        http.stream("POST", path, json={**doc, "stream": True}, headers=headers) as resp,
    ):
        headed = time.monotonic() - began
        lines = [(time.monotonic() - began, line.encode()) async for line in resp.aiter_lines()]
    return resp, headed, lines


def _first_data(lines: list[tuple[float, bytes]]) -> float:
    return next(at for at, line in lines if line.startswith((b"data:", b"event:")))


async def test_a_late_first_token_gets_the_headers_and_keep_alives_first(early: Stack) -> None:
    """The headers and comments come while the first token is awaited, the answer after them,
    whole; a stream on time starts with its content, naming its deployment, as before."""
    resp, headed, lines = await _timed_stream(
        early, "/v1/chat/completions", {**CHAT, "model": LATE}
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    content_at = _first_data(lines)
    assert content_at - headed > 1.0, (headed, lines)  # the headers did not wait for it
    comments = [line for at, line in lines if at < content_at and line.startswith(b":")]
    assert len(comments) >= 2, lines  # one at the start, then one every second
    data = [line[5:].strip() for _, line in lines if line.startswith(b"data:")]
    assert data[-1] == b"[DONE]"
    words = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or ""
        for d in data[:-1]
        if json.loads(d).get("choices")
    )
    assert words.split()[-3:] == ["one", "two", "three"], data
    assert resp.headers["x-request-id"]

    on_time, _, quick = await _timed_stream(
        early, "/v1/chat/completions", {**CHAT, "model": ON_TIME}
    )
    assert on_time.status_code == 200
    assert on_time.headers["x-switchyard-deployment"]
    assert quick[0][1].startswith(b"data:"), quick  # no comment ahead of content on time


async def test_the_sdks_read_a_stream_that_started_early(early: Stack) -> None:
    """The official openai and anthropic SDKs read the comments as nothing and the answer as
    usual."""
    async with openai.AsyncOpenAI(
        base_url=early.tail_url + "/v1", api_key=early.api_key, max_retries=0, timeout=30
    ) as client:
        stream = await client.chat.completions.create(
            model=LATE, messages=[{"role": "user", "content": "one two three"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.split()[-3:] == ["one", "two", "three"]
    async with anthropic.AsyncAnthropic(
        base_url=early.tail_url, api_key=early.api_key, max_retries=0, timeout=30
    ) as claude:
        events = [
            e
            async for e in await claude.messages.create(
                model=LATE,
                stream=True,
                max_tokens=32,
                messages=[{"role": "user", "content": "one two three"}],
            )
        ]
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start", kinds
    assert kinds[-1] == "message_stop", kinds
    said = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert said.split()[-3:] == ["one", "two", "three"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
async def test_an_error_after_an_early_start_is_the_streams_error_event(
    early: Stack, path: str
) -> None:
    """The first chunk misses its ``X-Stainless-Timeout`` (2 s) after the stream started at
    1 s: the answer is a 200 whose stream ends with the deadline's error event in the
    route's dialect, not a second status."""
    docs: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": CHAT,
        "/v1/messages": MESSAGES,
        "/v1/responses": RESPONSES,
    }
    doc = {**docs[path], "model": LATE}
    resp, _, lines = await _timed_stream(early, path, doc, **{"X-Stainless-Timeout": "2"})
    assert resp.status_code == 200, lines
    assert lines[0][1].startswith(b":"), lines
    data = [json.loads(line[5:]) for _, line in lines if line.startswith(b"data:")]
    events = [line[6:].strip() for _, line in lines if line.startswith(b"event:")]
    if path == "/v1/messages":
        assert events == [b"error"], lines  # nothing but the error
        assert data[0]["error"]["type"] == "timeout_error", data
    elif path == "/v1/responses":
        # Opened first: OpenAI's SDK refuses an error before any response.created.
        assert events == [b"response.created", b"error", b"response.failed"], lines
        assert data[1]["code"] == "deadline_exceeded", data
        assert data[2]["response"]["id"] == data[0]["response"]["id"], data
        assert data[2]["response"]["status"] == "failed", data
    else:
        assert len(data) == 1, lines
        assert data[0]["error"]["code"] == "deadline_exceeded", data


async def test_openais_stream_helper_reads_an_early_started_response_that_failed(
    early: Stack,
) -> None:
    """``client.responses.stream()`` accumulates a Response from ``response.created`` on: it
    raised RuntimeError at an ``error`` no ``response.created`` came before."""
    async with (
        openai.AsyncOpenAI(
            base_url=early.tail_url + "/v1", api_key=early.api_key, max_retries=0, timeout=30
        ) as client,
        client.responses.stream(
            model=LATE, input="one two three", extra_headers={"X-Stainless-Timeout": "2"}
        ) as stream,
    ):
        kinds = [event.type async for event in stream]
    assert kinds == ["response.created", "error", "response.failed"], kinds
