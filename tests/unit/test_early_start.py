"""The early start of a stream whose first content is late (:class:`EarlyStart`), against a
``send`` that behaves as uvicorn's (it waits while the client does not read before it takes a
message, and refuses a second start or a body before the start): whatever moment the content
or the end comes, the response has exactly one start, and a start that was never taken lets
the relay send its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.errors import DeadlineExceeded
from switchyard.ingress import stream_relay
from switchyard.ingress.departure import Departure, Waiting
from switchyard.ingress.edge import FinalReply
from switchyard.ingress.responses import SSE_KEEPALIVE
from switchyard.runtime.tasks import TaskSupervisor
from tests.unit.test_stream_opening_stop import CHUNK, _Cycle, _never

pytestmark = pytest.mark.unit

HEADERS = list(stream_relay.SSE_HEADERS)


def _kinds(cycle: _Cycle) -> list[str]:
    return [
        "start"
        if m["type"] == "http.response.start"
        else "comment"
        if m.get("body") == SSE_KEEPALIVE
        else "body"
        for m in cycle.messages
    ]


async def test_content_after_the_start_goes_out_as_body_after_the_comments() -> None:
    cycle = _Cycle(pause_after=100)
    state = {"started": False}

    def taken() -> None:
        state["started"] = True

    early = stream_relay.EarlyStart(cycle.send, HEADERS, 0.02, taken)
    await asyncio.sleep(0.07)  # the start, then a comment or two
    await early.stop()
    assert state["started"]
    kinds = _kinds(cycle)
    assert kinds[0] == "start"
    assert kinds[1:] == ["comment"] * (len(kinds) - 1)
    assert len(kinds) >= 2
    count = len(cycle.messages)
    await asyncio.sleep(0.05)
    assert len(cycle.messages) == count  # stopped: no comment after it


async def test_a_stop_while_the_start_waits_for_the_client_sends_nothing() -> None:
    """uvicorn waits for a paused transport before it takes a start: the early start cut
    there was never taken, so the relay sends its own start with its content."""
    cycle = _Cycle(pause_after=0)  # the client reads nothing yet
    state = {"started": False}

    def taken() -> None:
        state["started"] = True

    early = stream_relay.EarlyStart(cycle.send, HEADERS, 0.01, taken)
    await asyncio.wait_for(cycle.stalled.wait(), 5)
    await early.stop()
    assert not state["started"]
    assert cycle.messages == []
    cycle.writable.set()
    await cycle.send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    assert _kinds(cycle) == ["start"]


async def test_a_stop_while_a_comment_waits_for_the_client_leaves_one_start() -> None:
    """The start was taken, its comment waits on the client: the relay then writes its
    content as body, never a second start."""
    cycle = _Cycle(pause_after=1)  # the start is taken, then the client stops reading
    state = {"started": False}

    def taken() -> None:
        state["started"] = True

    early = stream_relay.EarlyStart(cycle.send, HEADERS, 0.01, taken)
    await asyncio.wait_for(cycle.stalled.wait(), 5)
    await early.stop()
    assert state["started"]
    assert _kinds(cycle) == ["start"]


async def _late_chunks(after: float) -> AsyncGenerator[Reply, None]:
    await asyncio.sleep(after)
    yield Reply(ReplyKind.CHUNK, CHUNK, deployment="fake--d", attempts=1)
    yield Reply(ReplyKind.FINAL, b"", seq=1)


@pytest.mark.parametrize(("early_s", "late_s"), [(0.02, 0.1), (0.2, 0.01)])
async def test_a_relayed_stream_has_one_start_whenever_its_content_comes(
    early_s: float, late_s: float
) -> None:
    """Late content: the early start and comments, then the content as body (no deployment
    header: it went out before one was named). On-time content: one start with it, naming
    the deployment, and no comment."""
    cycle = _Cycle(pause_after=100)
    tasks = TaskSupervisor("test")
    state = {"started": False}
    try:
        async with Departure(_never, tasks, Waiting()) as departure:
            await stream_relay.relay_stream(
                _late_chunks(late_s),
                headers=HEADERS,
                departure=departure,
                send=cycle.send,
                state=state,
                final=FinalReply(),
                early_s=early_s,
            )
    finally:
        await tasks.cancel_all()
    kinds = _kinds(cycle)
    assert kinds.count("start") == 1
    start: dict[str, Any] = cycle.messages[0]
    named = dict(start["headers"]).get(b"x-switchyard-deployment")
    if early_s < late_s:
        assert kinds[:2] == ["start", "comment"]
        assert named is None
    else:
        assert "comment" not in kinds
        assert named == b"fake--d"
    assert cycle.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def _begun_then_late(after: float) -> AsyncGenerator[Reply, None]:
    yield Reply(ReplyKind.KEEPALIVE, b"", begun=True, delivery="1.1")
    await asyncio.sleep(after)
    yield Reply(ReplyKind.CHUNK, CHUNK, deployment="fake--d", attempts=1)


@pytest.mark.parametrize("early_s", [0.0, 10.0])
async def test_a_begun_stream_starts_before_the_sdks_timeout_only_if_early_starts_are_on(
    early_s: float,
) -> None:
    """``ingress.stream_start_s: 0`` asks for HTTP error statuses over error events: a
    provider that began (``Sy-Begun``) started the stream anyway, before the SDK's
    ``X-Stainless-Timeout`` (a review). With early starts on, it still does."""
    cycle = _Cycle(pause_after=100)
    tasks = TaskSupervisor("test")
    state = {"started": False}
    try:
        async with Departure(_never, tasks, Waiting()) as departure:
            relay = stream_relay.relay_stream(
                _begun_then_late(2.0),  # past 0.3 s and the SDK's grace (SDK_GRACE_S, 1 s)
                headers=HEADERS,
                departure=departure,
                send=cycle.send,
                state=state,
                final=FinalReply(),
                first_within=0.3,
                early_s=early_s,
            )
            if early_s:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.6):
                        await relay
                assert _kinds(cycle)[:1] == ["start"]
            else:
                with pytest.raises(DeadlineExceeded):
                    await relay
                assert cycle.messages == []
    finally:
        await tasks.cancel_all()
