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
billed as one whose caller left (499), for what the provider answered. Unless the connection
reconnected meanwhile: the parts the old socket held were lost, not left unacknowledged, and
the replay after the reconnect sends them again (the answer stays), up to
:data:`PARTS_SENDS` times while reconnects keep losing them (:func:`replay_final`; a send
that a reconnect cut after its last part counts too: that part's window and the final are
not acknowledged, so may be lost), then
ends with 502 ``stream_interrupted`` and the terminator (a caller must not be left waiting
for a final that never comes). The sending has a
cutoff, the request's deadline and at most :func:`~switchyard.bus.part_acks.send_limit`
(120 s and a second per MiB): it
holds a dispatch slot and the whole answer, so a caller acknowledging just often enough must
not hold them long (past the deadline it ends 504 ``deadline_exceeded``, else 499
``caller_gone``); a cancel stops it at once (billed as a cancel, as before the answer), and
one landing after the last part went is too late (the final follows; not marked cancelled).
A replay's sending is stopped by a cancel too (:attr:`Job.replaying`), before its next send
and, to a caller that does not acknowledge parts, before the final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from nats.aio.client import Client as NATS

from switchyard.bus import replies
from switchyard.bus.part_acks import Stopped, Unacknowledged, send_acked_parts, send_limit
from switchyard.bus.parts import answer_room, send_parts
from switchyard.errors import ApiError, DeadlineExceeded
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.estimate import Estimated
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.probes import CALLER_GONE, caller_gone

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
    job.replaying = False  # (a replay's final: a cancel from here is too late)
    return _final(nc, job, body, len(job.chunks) if job.stream else None, end=end)


async def _in_parts(nc: NATS, job: Job, body: bytes, room: int, *, end: bool) -> None:
    if not job.env.parts_ack:  # a caller that does not acknowledge: back-to-back, as before
        count = await send_parts(nc, job.reply, body, room, job.delivery)
        if job.cancelled:  # (a replay's caller that left while they went: no final)
            await _left(nc, job)
            return
        job.replaying = False
        await _final(nc, job, b"", count, end=end, delivery=job.delivery)
        return
    if job.cancelled:  # (a replay of an answer whose caller left meanwhile)
        await _left(nc, job)
        return
    limit_s = send_limit(len(body))
    send_s = limit_s if not job.deadline else min(limit_s, job.deadline - time.time())
    job.parts_stop = stop = asyncio.Event()
    reconnects = nc.stats["reconnects"]
    try:
        count = await send_acked_parts(
            nc, job.reply, body, room, job.delivery, send_s=send_s, stop=stop
        )
    except Stopped:  # its caller cancelled it (or stopped answering probes)
        await _left(nc, job)
        return
    except Unacknowledged as exc:
        if nc.stats["reconnects"] != reconnects and not exc.late:
            # Parts went with the old socket, unacknowledged for that: the answer stays, and
            # the replay after a reconnect (the handler's) sends its parts again, with a
            # fresh window.
            log.info("parts of an answer lost in a NATS reconnect (%s): sent again", exc)
            job.parts_lost = True
            return
        log.info(
            "a caller stopped acknowledging its answer's parts (%s): the request is stopped", exc
        )
        timed_out = exc.late and send_s < limit_s  # the cutoff was the deadline
        late_s = limit_s if exc.late else None
        gone = DeadlineExceeded(LATE) if timed_out else unacknowledged(late_s=late_s)
        job.status = gone.status  # billed (499: as a caller that left) for what was answered
        job.answer = gone  # (a replay sends this, not the parts again)
        await _tell(nc, job, gone, end=end)
        return
    finally:
        job.parts_stop = None
    if stop.is_set():  # a cancel after the last part (the send's clean-up can yield): too
        job.cancelled = False  # late, as one after the final is; the answer is delivered
    job.replaying = False
    await _final(nc, job, b"", count, end=end, delivery=job.delivery)
    if nc.stats["reconnects"] != reconnects:
        # The last window's acknowledgements are not waited for: its parts, and the final
        # with them, may have gone with the old socket. Sent again (replay_final).
        job.parts_lost = True


async def replay_final(nc: NATS, job: Job, body: bytes, *, end: bool = True) -> None:
    """The replay's send of ``body`` (:func:`send_final`), again while a reconnect loses its
    parts, :data:`PARTS_SENDS` times in all; then the caller is told (502
    ``stream_interrupted``, and the terminator), not left to wait for its deadline.

    A cancel stops it (:attr:`Job.replaying`: before, the answer counted as out and a cancel
    was ignored): none more is sent, and the caller's end follows, as one that left."""
    for _ in range(PARTS_SENDS):
        job.replaying = True  # (until its final goes: send_final)
        if job.cancelled:
            job.replaying = False
            await _left(nc, job)
            return
        job.parts_lost = False
        await send_final(nc, job, body, end=end)
        job.replaying = False
        if not job.parts_lost:
            return
    log.warning("an answer's parts were lost in %d NATS reconnects: not sent", PARTS_SENDS)
    job.answer = interrupted = ApiError(PARTS_LOST, code="stream_interrupted", status=502)
    job.status = interrupted.status  # billed and observed as what the caller got
    await _tell(nc, job, interrupted, end=end)


async def _tell(nc: NATS, job: Job, error: ApiError, *, end: bool) -> None:
    """``job``'s caller gets ``error`` in place of the rest of its answer (and the
    terminator, if ``end``), named as every answer of the job is."""
    await replies.send_error(
        nc,
        job.reply,
        error,
        deployment=job.deployment_id,
        attempts=job.attempts,
        end=end,
        request_id=job.env.request_id,
        priority=job.env.priority,
    )


def replay_error(job: Job, sent: bytes | ApiError | None) -> ApiError | None:
    """The error a replay ended ``job``'s answer with (``sent``, the answer before it), if
    any: the bus lost it (502 ``stream_interrupted``, 503 ``replay_unavailable``)."""
    answer = job.answer
    return answer if isinstance(answer, ApiError) and answer is not sent else None


async def _left(nc: NATS, job: Job) -> None:
    """The end of an answer whose caller left while its parts went out, as the handler ends
    one whose caller left before (``caller_gone`` first to one that stopped answering
    probes: a caller still there learns why), always with the terminator."""
    job.status = CLIENT_CLOSED
    if job.inflight.silent:
        await replies.send_error(nc, job.reply, caller_gone())
    else:
        await replies.end_stream(nc, job.reply)


PARTS_SENDS = 3  # sends of an answer's parts whose reconnects lose them, at most
PARTS_LOST = (
    "the connection carrying this answer's parts kept reconnecting while they were sent; "
    "retry the request"
)
LATE = (
    "the request deadline passed before its caller acknowledged the parts of its answer "
    "(docs/nats-api.md, 'Answers in parts')"
)


def unacknowledged(*, late_s: float | None = None) -> ApiError:
    """What a request whose caller stopped acknowledging its answer's parts ends with (or
    acknowledged them too slowly for all to go out within the cutoff, ``late_s``)."""
    why = (
        "in time"
        if late_s is None
        else f"too slowly for the whole answer to be sent within {late_s:.0f} s"
    )
    return ApiError(
        f"the request was stopped: its caller did not acknowledge the parts of its answer {why} "
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
        usage_estimated=isinstance(job.usage, Estimated),
        chunks=chunks,
        end=end,
        request_id=job.env.request_id,
        priority=job.env.priority,
        delivery=delivery,
    )
