"""Whole answers larger than one bus message, in parts, on the session stack.

A non-streamed answer travelled to its caller as one NATS message, which ``max_payload`` caps
(8 MiB less 16 KiB here): an embeddings call of many wide vectors (2,048 inputs of 3,072 float
dimensions is ~140 MB of JSON) or a long answer with logprobs was a 413 ``answer_too_large``
however it was asked. Now a caller that reads parts (the edges, LLMClient: ``Sy-Parts-Max``)
gets it in parts, joined whole, up to its cap (``ingress.max_answer_bytes``: 24 MiB here);
past the cap, and for a caller that announced no parts, it is the 413 it was.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from switchyard.bus import subjects
from switchyard.bus.replies import Reply, ReplyKind
from switchyard.client import LLMClient
from switchyard.errors import ApiError
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

WIDE = "dims:3072"  # text-embedding-3-large's width, each float as long as OpenAI writes it
ROUTES = {"parts-embed": {"deployments": [{"provider": "fake", "model": WIDE}]}}
IN_PARTS = 200  # ~14 MB of JSON: past one message, under the edges' 24 MiB
PAST_CAP = 400  # ~28 MB
CAP = 24 * 2**20  # an LLMClient's, told (parts are opt-in: off by default)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    async with stack.live_routes(ROUTES):
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=60) as http:
            for n in range(150):  # every head and model-proxy follows the table on its own
                probe = await _embed(http, stack, 1, f"parts-probe{n}")
                if probe.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert probe.status_code == 200, probe.text
        yield stack


def _body(inputs: int) -> dict[str, Any]:
    return {
        "model": "parts-embed",
        "input": [f"text number {i}" for i in range(inputs)],
        "encoding_format": "float",
    }


async def _embed(
    http: httpx.AsyncClient, stack: Stack, inputs: int, request_id: str
) -> httpx.Response:
    return await http.post(
        "/v1/embeddings",
        json=_body(inputs),
        headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": request_id},
    )


def _whole(answer: dict[str, Any], inputs: int) -> None:
    assert [item["index"] for item in answer["data"]] == list(range(inputs))
    assert all(len(item["embedding"]) == 3072 for item in answer["data"])


@pytest.mark.asyncio(loop_scope="session")
async def test_an_answer_past_one_message_comes_whole_over_http_billed_once(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    before = len(upstream.calls_for(WIDE))
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=120) as http:
        got = await _embed(http, routed, IN_PARTS, "parts-http")
    assert got.status_code == 200, got.text[:300]
    assert len(got.content) > 8 * 2**20  # more than one message carries
    _whole(got.json(), IN_PARTS)
    assert len(upstream.calls_for(WIDE)) == before + 1
    event = await routed.usage_of("parts-http")
    assert event is not None
    assert (event.status, event.prompt_tokens) == (200, IN_PARTS)  # the provider's count


@pytest.mark.asyncio(loop_scope="session")
async def test_an_answer_past_one_message_comes_whole_to_an_internal_client(
    routed: Stack,
) -> None:
    nc = await routed.connect("app")
    try:
        async with LLMClient(nc, api_key=routed.api_key, max_answer_bytes=CAP) as llm:
            answer = await llm.embed(_body(IN_PARTS), timeout=120)
        _whole(answer, IN_PARTS)
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_an_answer_past_the_edges_cap_is_the_413_it_was(routed: Stack) -> None:
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=120) as http:
        over = await _embed(http, routed, PAST_CAP, "parts-over")
    assert over.status_code == 413, over.text[:300]
    assert over.headers["x-should-retry"] == "false", over.headers
    error = over.json()["error"]
    assert error["code"] == "answer_too_large", error
    assert "more than the 24.0 MiB a whole answer may be" in error["message"], error
    assert "inputs of this size fit" in error["message"], error


@pytest.mark.asyncio(loop_scope="session")
async def test_a_caller_that_reads_no_parts_gets_the_413_it_always_did(routed: Stack) -> None:
    """An internal client older than parts (here: one that reads none) sends no
    ``Sy-Parts-Max``: it never gets a part it could not read, but today's 413."""
    nc = await routed.connect("app")
    try:
        async with LLMClient(nc, api_key=routed.api_key, max_answer_bytes=0) as llm:
            with pytest.raises(ApiError) as info:
                await llm.embed(_body(IN_PARTS), timeout=120)
    finally:
        await nc.close()
    assert info.value.status == 413
    assert info.value.code == "answer_too_large"
    assert "more than the 8.0 MiB a whole answer may be" in info.value.message


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_a_redelivered_request_of_a_caller_that_reads_parts_is_announced_first(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    """Its model-proxy may have died after some parts, which the next delivery's cannot
    follow: so the next delivery names itself before its provider call, as a stream's does
    (docs/nats-api.md, "Answers in parts"), and a caller holding parts ends the request and
    cancels the copy. A caller with nothing yet (here: the model-proxy died during its
    provider call) just takes the new delivery's answer."""
    nc = await routed.connect("app")
    called = len(upstream.calls_for("slow:1500"))
    try:
        async with LLMClient(nc, api_key=routed.api_key, max_answer_bytes=CAP) as llm:

            async def one(i: int) -> list[Reply]:
                body = {"model": "slow", "messages": [{"role": "user", "content": f"p{i}"}]}
                exchange = llm.exchange(subjects.CHAT, json.dumps(body).encode())
                return [reply async for reply in exchange]

            tasks = [asyncio.create_task(one(i)) for i in range(6)]
            deadline = time.monotonic() + 15
            while len(upstream.calls_for("slow:1500")) - called < 6:
                assert time.monotonic() < deadline, "the requests never reached the provider"
                await asyncio.sleep(0.02)
            routed.kill("modelproxy-1")
            answers = await asyncio.gather(*tasks)
    finally:
        await nc.close()
        proc = routed.process("modelproxy-1")
        await proc.start()
        assert await proc.wait_healthy(30)
    assert all(replies[-1].kind is ReplyKind.FINAL for replies in answers)
    announced = [
        r.delivery
        for replies in answers
        for r in replies
        if r.kind is ReplyKind.KEEPALIVE and r.delivery
    ]
    assert announced, "no redelivery named itself"
    assert all(d.endswith(".2") for d in announced), announced
