"""Relay one request's reply stream to its HTTP client as server-sent events.

A stream's status goes out with its first content, so that an error before the first token
(a key over its limit, a full queue, no deployment) is a proper HTTP error the SDKs retry. A
first token can take long, though: a reasoning model thinks for a minute, a request waits its
turn in a saturated deployment's fair queue. A proxy or load balancer in front of the edge
that hears nothing for its read timeout (nginx's 60 s) cuts the request with a 504, which the
SDKs retry, each retry a new provider call. So once the first content is ``early_s`` late, the
stream starts without it: status 200, the headers that are known, and an SSE comment, then
another comment every ``early_s`` until the content comes. From then on an error is the
stream's error event, as for any stream that started.

A client whose SDK times the wait for the response headers (``X-Stainless-Timeout``: the Node
SDKs) gets them before that wait runs out when the provider's stream has begun but its first
content is still to come (its opening, a role alone, is held in the model-proxy so that a
failure can still fall back): a reasoning model sends its role at once, then thinks for longer
than the SDK's timeout. Without that sign from the provider, the wait's end is a 504.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from switchyard.bus.replies import Reply, ReplyKind, error_from_reply
from switchyard.errors import ServiceUnavailable
from switchyard.ingress.departure import ClientGone, Departure
from switchyard.ingress.edge import FinalReply, sse_frames
from switchyard.ingress.onewrite import send_whole
from switchyard.ingress.responses import SSE_KEEPALIVE
from switchyard.ingress.timeouts import first_reply
from switchyard.schemas.scheduling import RANK

log = logging.getLogger("switchyard.ingress")

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def answered_by(reply: Reply) -> Headers:
    """Which deployment answered, after how many attempts, in which priority class (a final,
    or a stream's first chunk)."""
    if not reply.deployment:
        return []
    named = [
        (b"x-switchyard-deployment", reply.deployment.encode()),
        (b"x-switchyard-attempts", str(reply.attempts or 1).encode()),
    ]
    if reply.priority in RANK:  # one of the three names, never other text in a header
        named.append((b"x-switchyard-priority", reply.priority.encode()))
    return named


class EarlyStart:
    """Starts a stream whose first content is late: after ``after`` seconds (from now), or at
    :meth:`now`, it sends the response's start with ``headers`` and an SSE comment, then a
    comment every ``after`` seconds (``after`` 0: none, and no timer) until :meth:`stop`.
    Costs one timer per stream that is on time; a task only for one that is late."""

    __slots__ = ("_after", "_beats", "_handle", "_headers", "_send", "_taken")

    def __init__(
        self, send: Send, headers: Headers, after: float, taken: Callable[[], None]
    ) -> None:
        self._send = send
        self._headers = headers
        self._after = after
        self._taken = taken
        self._beats: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = None
        if after > 0:
            self._handle = asyncio.get_running_loop().call_later(after, self._late)

    def now(self) -> None:
        """Start at once, unless started already."""
        if self._beats is None:
            if self._handle is not None:
                self._handle.cancel()
            self._late()

    def _late(self) -> None:
        self._handle = None
        self._beats = asyncio.get_running_loop().create_task(self._beat(), name="early-start")

    async def _beat(self) -> None:
        comment = {"type": "http.response.body", "body": SSE_KEEPALIVE, "more_body": True}
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self._headers}
            await send_whole(self._send, start, comment, taken=self._taken)
            while self._after > 0:
                await asyncio.sleep(self._after)
                await self._send(comment)
        except asyncio.CancelledError:
            raise
        except Exception:  # the client's connection broke: its relay hears of it on its own
            log.debug("a late stream's keep-alive could not be written", exc_info=True)

    async def stop(self) -> None:
        """No more keep-alives (the content came, or the request ended); returns once none
        is being written."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        beats, self._beats = self._beats, None
        if beats is not None:
            beats.cancel()  # a start cut before uvicorn took it was never sent (``taken``)
            # wait(), not ``await beats``: its CancelledError is not this task's own, and a
            # cancellation of this task while it waits must still reach the caller.
            await asyncio.wait((beats,))


async def relay_stream(
    replies: Any,
    *,
    headers: Headers,
    departure: Departure,
    send: Send,
    state: dict[str, bool],
    final: FinalReply,
    dialect: str = "chat",
    first_within: float | None = None,
    early_s: float = 0.0,
) -> None:
    """Relay a reply stream as SSE; ``state["started"]`` turns True once the server has taken
    the response's start. ``headers``: the response's own (SSE, request id, limits), to which
    the answering deployment's are added when the stream starts with its content.
    ``first_within``: seconds the first chunk may take (504 past it, unless the provider has
    begun and ``early_s`` > 0: then the stream starts before it,
    :func:`~.timeouts.first_reply`); ``early_s`` (> 0): start without it once it is this late
    (:class:`EarlyStart`). ``early_s`` 0 (``ingress.stream_start_s: 0``) never starts a stream
    before its content: the operator asked for HTTP error statuses over error events."""

    def taken() -> None:  # the server has the start: a stop that lands while the opening
        state["started"] = True  # waits on flow control ends the stream, not a second start

    early = None
    if early_s > 0:
        early = EarlyStart(send, headers, early_s, taken)
    try:
        first = await first_reply(replies, first_within, early.now if early else None)
    finally:
        if early is not None:
            await early.stop()
    if first is None:
        raise ServiceUnavailable("the reply ended without an answer", code="no_answer")
    if first.kind is ReplyKind.ERROR:
        final.refusal = first
        raise error_from_reply(first)
    frames = sse_frames(first, replies, final, dialect)
    opening = await anext(frames, b"")  # made from ``first``: at hand, so it goes with the head
    body = {"type": "http.response.body", "body": opening, "more_body": True}
    if state["started"]:
        await send(body)
    else:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*headers, *answered_by(first)],
        }
        await send_whole(send, start, body, taken=taken)
    final.first_at = time.perf_counter()
    async for frame in frames:
        if departure.gone:  # the client left (and the wait for this frame was not interrupted)
            raise ClientGone
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    if not departure.gone:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
