"""A whole (non-streamed) answer's final message, in parts when one message cannot carry it.

Only a caller that announced it reads parts (``Sy-Parts-Max``) was let have an answer larger
than one message (:func:`switchyard.bus.parts.answer_room` bounds what the provider's answer
may be): it gets the answer as ``part`` messages, then the final with an empty body and
``Sy-Seq`` saying how many parts it follows and ``Sy-Attempt`` naming their delivery
(:mod:`switchyard.bus.parts`). A replay after a
reconnect sends them all again, as it sends a stream's chunks: the caller skips those it has.
Every other answer goes out as it always did, one final message.

To a caller that acknowledges parts (``Sy-Parts-Ack``) they go out with flow control
(:mod:`switchyard.bus.part_acks`); one that stops acknowledging is taken for gone: the rest is
not sent, the request ends with ``caller_gone`` (a caller still there learns why) and is
billed as one whose caller left (499), for what the provider answered.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from nats.aio.client import Client as NATS

from switchyard.bus import replies
from switchyard.bus.part_acks import Unacknowledged, send_acked_parts
from switchyard.bus.parts import answer_room, send_parts
from switchyard.errors import ApiError
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.probes import CALLER_GONE

log = logging.getLogger("switchyard.modelproxy")


class AnswerRooms:
    """:func:`~switchyard.bus.parts.answer_room` per request, as one dict lookup: every
    request of the edges announces the same ``Sy-Parts-Max``, so its value is read once (a
    few values at most: past :attr:`KEPT` the memo starts again, a caller sending many is
    read anew each time)."""

    KEPT = 64

    def __init__(self, cap: int) -> None:
        self.cap = cap  # modelproxy.max_answer_bytes: the most sent in parts, whatever is asked
        self._rooms: dict[tuple[int, str], int] = {}

    def of(self, max_payload: int, parts_max: str) -> int:
        """The largest whole answer a request may get (:func:`answer_room`).

        Raises:
            MalformedHeader: ``parts_max`` is not a number of bytes (never kept).
        """
        key = (max_payload, parts_max)
        room = self._rooms.get(key)
        if room is None:
            room = answer_room(max_payload, parts_max, self.cap)
            if len(self._rooms) >= self.KEPT:
                self._rooms.clear()
            self._rooms[key] = room
        return room


def send_final(nc: NATS, job: Job, body: bytes, *, end: bool) -> Coroutine[Any, Any, None]:
    """The send, to await, of ``body``, ``job``'s answer, as its final message (after its
    parts, when it has any), then the terminator if ``end``. A plain function: an answer of
    one message costs no coroutine more than it did."""
    room = replies.payload_room(nc.max_payload)
    if room and len(body) > room and job.env.parts_max and not job.stream:
        return _in_parts(nc, job, body, room, end=end)
    return _final(nc, job, body, len(job.chunks) if job.stream else None, end=end)


async def _in_parts(nc: NATS, job: Job, body: bytes, room: int, *, end: bool) -> None:
    if not job.env.parts_ack:  # a caller that does not acknowledge: back-to-back, as before
        count = await send_parts(nc, job.reply, body, room, job.delivery)
        await _final(nc, job, b"", count, end=end, delivery=job.delivery)
        return
    try:
        count = await send_acked_parts(nc, job.reply, body, room, job.delivery)
    except Unacknowledged as exc:
        log.info(
            "a caller stopped acknowledging its answer's parts (%s): the request is stopped", exc
        )
        job.status = CLIENT_CLOSED  # billed as a caller that left, for what the provider answered
        job.answer = gone = unacknowledged()  # (a replay sends this, not the parts again)
        await replies.send_error(
            nc,
            job.reply,
            gone,
            deployment=job.deployment_id,
            attempts=job.attempts,
            end=end,
            request_id=job.env.request_id,
            priority=job.env.priority,
        )
        return
    await _final(nc, job, b"", count, end=end, delivery=job.delivery)


def unacknowledged() -> ApiError:
    """What a request whose caller stopped acknowledging its answer's parts ends with."""
    return ApiError(
        "the request was stopped: its caller did not acknowledge a part of its answer in time "
        "(docs/nats-api.md, 'Answers in parts')",
        code=CALLER_GONE,
        status=CLIENT_CLOSED,
    )


def _final(
    nc: NATS, job: Job, body: bytes, chunks: int | None, *, end: bool, delivery: str = ""
) -> Coroutine[Any, Any, None]:
    return replies.send_final(
        nc,
        job.reply,
        body,
        deployment=job.deployment_id,
        attempts=job.attempts,
        usage=job.usage,
        chunks=chunks,
        end=end,
        request_id=job.env.request_id,
        priority=job.env.priority,
        delivery=delivery,
    )
