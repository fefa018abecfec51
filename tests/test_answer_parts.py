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
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.cancel_proof import cancel_headers, presented_key_hash
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.bus.part_acks import ACK_WAIT_S, WINDOW
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


BIG = 290  # ~20 MB of JSON each: three parts of one message, or 20 of 1 MiB with flow control
AT_ONCE = 8


async def _slow_consumers(stack: Stack) -> int:
    """How many times nats-server cut a client it could not write to fast enough."""
    port = stack.settings.stack.nats_monitor_port
    async with httpx.AsyncClient(timeout=10) as monitor:
        varz = (await monitor.get(f"http://127.0.0.1:{port}/varz")).json()
    return int(varz.get("slow_consumers", 0))


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_several_large_answers_at_once_do_not_cut_the_edges_connection(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    """Eight ~20 MB answers at once to one edge: sent back-to-back (no flow control) their
    parts passed what nats-server holds for one connection (``max_pending``, 32 MiB), and the
    server cut the edge's connection as a slow consumer, failing every request it carried.
    With acknowledged parts (at most two of 1 MiB unacknowledged per answer) every answer
    comes whole and the connection stays."""
    before = await _slow_consumers(routed)
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=180) as http:
        got = await asyncio.gather(
            *(_embed(http, routed, BIG, f"parts-many-{n}") for n in range(AT_ONCE))
        )
    assert [r.status_code for r in got] == [200] * AT_ONCE, [r.text[:200] for r in got]
    for answer in got:
        assert len(answer.content) > 20 * 10**6
        _whole(answer.json(), BIG)
    assert await _slow_consumers(routed) == before, "nats-server cut a slow consumer"


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_a_caller_that_stops_acknowledging_parts_is_stopped_and_billed_as_left(
    routed: Stack,
) -> None:
    """A caller that said it acknowledges parts (``Sy-Parts-Ack: 1``) and acknowledges none
    gets two parts, then, :data:`ACK_WAIT_S` later, the error ``caller_gone`` (499) instead
    of the rest; what the provider answered is billed, as for a caller that left."""
    nc = await routed.connect("app")
    headers = {
        h.AUTHORIZATION: f"Bearer {routed.api_key}",
        h.REQUEST_ID: "parts-unacked",
        h.PARTS_MAX: str(CAP),
        h.PARTS_ACK: "1",
    }
    kinds: list[str] = []
    began = 0.0  # when the first part came
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(
            subjects.EMBED, json.dumps(_body(IN_PARTS)).encode(), reply=inbox, headers=headers
        )
        last = None
        while True:
            msg = await sub.next_msg(timeout=ACK_WAIT_S + 60)
            if not msg.data and not msg.headers:
                break  # the terminator
            kind = (msg.headers or {}).get(h.KIND, "")
            kinds.append(kind)
            if kind == ReplyKind.PART.value:
                assert msg.reply, "a part to a caller that acknowledges asks for it"
                if kinds.count(kind) == 1:
                    began = time.monotonic()
            last = msg
    finally:
        await nc.close()
    assert kinds.count(ReplyKind.PART.value) == WINDOW
    assert time.monotonic() - began >= ACK_WAIT_S - 1
    assert last is not None
    assert last.headers is not None
    assert last.headers[h.KIND] == ReplyKind.ERROR.value
    assert last.headers[h.STATUS] == "499"
    assert json.loads(last.data)["error"]["code"] == "caller_gone"
    event = await routed.usage_of("parts-unacked")
    assert event is not None
    assert (event.status, event.prompt_tokens) == (499, IN_PARTS)  # what the provider answered


async def _unacked(
    stack: Stack, request_id: str, *, deadline_s: float = 0.0, cancel: bool = False
) -> tuple[list[Msg], float]:
    """A raw caller that says it acknowledges parts and acknowledges none (cancelling the
    request on its first part, if ``cancel``): its replies up to the terminator (excluded),
    and the seconds from its first part to that terminator."""
    nc = await stack.connect("app")
    auth = f"Bearer {stack.api_key}"
    headers = {
        h.AUTHORIZATION: auth,
        h.REQUEST_ID: request_id,
        h.PARTS_MAX: str(CAP),
        h.PARTS_ACK: "1",
    }
    if deadline_s:
        headers[h.DEADLINE] = Deadline.after(deadline_s).header()
    came: list[Msg] = []
    began = 0.0
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(
            subjects.EMBED, json.dumps(_body(IN_PARTS)).encode(), reply=inbox, headers=headers
        )
        while True:
            msg = await sub.next_msg(timeout=ACK_WAIT_S + 60)
            if not msg.data and not msg.headers:
                return came, time.monotonic() - began  # the terminator
            came.append(msg)
            if (msg.headers or {}).get(h.KIND) == ReplyKind.PART.value and not began:
                began = time.monotonic()
                if cancel:
                    env = Envelope.decode(headers)
                    stop = cancel_headers(env, 1, (auth, presented_key_hash(auth)))
                    assert stop is not None
                    await nc.publish(subjects.CANCEL, b"", headers=stop)
    finally:
        await nc.close()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_a_cancel_stops_the_sending_of_acknowledged_parts_at_once(routed: Stack) -> None:
    """The acknowledged sending of an answer's parts holds a dispatch slot and the answer: a
    cancel that comes while it waits for an acknowledgement ends it at once (it was ignored,
    the answer being made, and the request ended only when the wait ran out), billed as a
    cancel: status 499, for what the provider answered."""
    came, took = await _unacked(routed, "parts-cancelled", cancel=True)
    kinds = [(m.headers or {}).get(h.KIND) for m in came]
    assert ReplyKind.ERROR.value not in kinds  # nobody is there to be told: the terminator only
    assert kinds.count(ReplyKind.PART.value) <= WINDOW
    assert took < ACK_WAIT_S / 2
    event = await routed.usage_of("parts-cancelled")
    assert event is not None
    assert (event.status, event.prompt_tokens) == (499, IN_PARTS)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_the_sending_of_acknowledged_parts_ends_at_the_deadline(routed: Stack) -> None:
    """The sending has a cutoff, the request's deadline (and at most ``SEND_MAX_S``): a
    caller that does not acknowledge parts fast enough is not sent them past it, and the
    request ends there with 504 ``deadline_exceeded`` (it waited for the acknowledgement's
    own 10 s whatever the deadline, and a caller acknowledging just often enough held the
    slot for as long as it liked)."""
    came, took = await _unacked(routed, "parts-late", deadline_s=6)
    last = came[-1]
    assert last.headers is not None
    assert last.headers[h.KIND] == ReplyKind.ERROR.value
    assert (last.headers[h.STATUS], json.loads(last.data)["error"]["code"]) == (
        "504",
        "deadline_exceeded",
    )
    assert took < ACK_WAIT_S - 2
    event = await routed.usage_of("parts-late")
    assert event is not None
    assert (event.status, event.prompt_tokens) == (504, IN_PARTS)
