"""What a caller waiting on one request's reply stream keeps track of, across attempts.

:class:`ReplyProgress` applies the reply protocol's ordering rules (docs/nats-api.md, "Reply
protocol"): chunks once and in order, gaps held until a worker's replay fills them, and which
lost attempts are worth sending again (:class:`Resend`). :class:`Expiry` wakes a wait at its
deadline. :class:`switchyard.client.LLMClient` drives both; they live here, apart from the
client's sending and cancelling, because they are pure bookkeeping over reply messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.bus.headers import KIND
from switchyard.bus.replies import MOVED, Reply, ReplyKind
from switchyard.errors import ApiError, DeadlineExceeded, ProviderError, ServiceUnavailable

# Queued for every waiting request when the client's connection reconnected (reply paths lost).
RECONNECTED = object()
# How long a gap in a reply stream may last before the request ends with an error: a worker
# replays an answer once its usage is confirmed on a new connection, which its publisher
# retries after 5 s.
GAP_WAIT_S = 12.0
_NO_RESPONDERS = "503"
NO_WORKERS_RETRY_S = 2.0  # a head restarts in about a second; a client waits this long


class Resend(Exception):
    """Send the request again on a fresh reply path (after ``pause`` x round seconds)."""

    def __init__(self, why: str, pause: float = 0.0) -> None:
        super().__init__(why)
        self.why = why
        self.pause = pause


@dataclass(slots=True)
class ReplyProgress:
    """What one request's reply stream has delivered so far, across attempts.

    Chunks are yielded in order, once: a worker whose NATS node failed while it answered sends
    the answer again, whole, once its usage is confirmed on a new connection (its publisher
    retries after ``GAP_WAIT_S`` / 2), so a chunk already seen is skipped, and a chunk or final
    beyond a missing one is held back (a *gap*) until the missing ones arrive or ``GAP_WAIT_S``
    passes.
    """

    sent_content: bool = False
    delivery: str | None = None
    next_seq: int = 0
    gap_since: float | None = None
    placed: str = ""  # the deployment whose queue took the request (a head's ``accepted``)
    # Of ``placed``'s accepted: the caller's attempt it came on and its Sy-Placement.
    placed_as: tuple[int, int] = (0, 0)

    def wait_until(self, until: float) -> float:
        return until if self.gap_since is None else min(until, self.gap_since + GAP_WAIT_S)

    def check(self, item: Any, *, past_deadline: bool, last: bool, now: float) -> Msg | None:
        """The message to act on, or None to keep waiting.

        Raises:
            Resend: the attempt is lost (not accepted in time, reconnect, no responders).
            DeadlineExceeded / ServiceUnavailable / ProviderError: the request is over.
        """
        if item is None:
            if self.gap_since is not None and now >= self.gap_since + GAP_WAIT_S:
                if not self.sent_content:
                    raise Resend("a gap in the reply stream was never filled")
                raise ProviderError(
                    "part of the reply stream was lost in a NATS failover",
                    provider="",
                    code="stream_interrupted",
                )
            if past_deadline:
                raise self.deadline_passed()
            raise Resend("no head accepted it in time")
        if item is RECONNECTED:
            if self.sent_content:
                raise ProviderError(
                    "the reply stream was interrupted by a NATS failover",
                    provider="",
                    code="stream_interrupted",
                )
            raise Resend("this client reconnected to NATS")
        msg: Msg = item
        if not msg.headers:
            if not msg.data:
                if self.gap_since is not None:
                    return None  # the end of an answer with a gap: its replay follows
                raise ServiceUnavailable("the reply ended without an answer", code="no_answer")
            return None
        if msg.headers.get("Status") == _NO_RESPONDERS and not msg.data:
            if last:
                raise ServiceUnavailable(
                    "no head workers are available to take the request",
                    code="no_workers",
                    retry_after=NO_WORKERS_RETRY_S,
                )
            raise Resend("no head is listening", pause=0.01)
        return msg

    def accepted(self, reply: Reply, attempt: int) -> Reply:
        """A head's ``accepted`` on the caller's ``attempt``: where the request is queued now,
        unless it is an earlier placement's that came late (heads send them, and the reply
        path does not order one head's messages against another's: a reroute's may arrive
        first, and a 504 named the deployment that had failed). One without a placement (an
        older head) is taken as it comes, as before.

        Returns :data:`~switchyard.bus.replies.MOVED` (a keep-alive, for the caller) when it moved
        the request from an earlier accepted placement: what that one's model-proxy said (its
        provider has begun) no longer holds. Else ``reply``, which :meth:`admit` does not pass."""
        if not reply.deployment:
            return reply
        placed_as = (attempt, reply.placement)
        if reply.placement and placed_as < self.placed_as:
            return reply
        if reply.placement:
            # Moved from an earlier placement; a later one that comes first (its earlier one's
            # accepted late, or lost) moved it too: what that placement's model-proxy said is
            # past. Not when a keep-alive of this placement came first: it told the move.
            moved = placed_as > self.placed_as and (self.placed_as > (0, 0) or placed_as[1] > 1)
        else:
            moved = bool(self.placed)
        self.placed, self.placed_as = reply.deployment, placed_as
        return MOVED if moved else reply

    def heard(self, reply: Reply, attempt: int) -> Reply | None:
        """A model-proxy's keep-alive that names its placement, on the caller's ``attempt``
        (one naming none, of an older model-proxy, is not asked about): None for one of a
        placement the request has left since (it came after a reroute's ``accepted``: its
        ``Sy-Begun`` would start a stream the next provider has not begun, and a batch line
        read as worked on again). One of a later placement than the last accepted (whose own
        ``accepted`` is late or lost) tells the move itself: yielded with ``moved`` set, so
        that what the earlier placement said no longer holds. Such a move clears ``placed`` (a
        keep-alive names no deployment) until that placement's ``accepted`` arrives: a 504
        before it names no deployment. A head's ``accepted`` names the placement its
        model-proxy serves (a full queue passed over is one), so only a real move does this.
        While the last accepted named no placement (an older head), keep-alives pass as they
        come."""
        if self.placed and not self.placed_as[1]:
            return reply
        placed_as = (attempt, reply.placement)
        if placed_as < self.placed_as:
            return None
        if placed_as == self.placed_as:
            return reply
        moved = self.placed_as > (0, 0) or placed_as[1] > 1
        self.placed, self.placed_as = "", placed_as  # (its deployment is not named here)
        return replace(reply, moved=True) if moved else reply

    def deadline_passed(self, cut_off: str = "") -> DeadlineExceeded:
        """The 504 of a request whose deadline passed, saying how far its answer had come: a
        stream cut after 30 chunks read "before an answer arrived", which sent its reader
        looking for a provider that never answered."""
        # Which deployment had it, as every answer and error of a worker says.
        named = ((b"x-switchyard-deployment", self.placed.encode()),) if self.placed else ()
        if self.next_seq:
            chunks = f"{self.next_seq} chunk{'s' if self.next_seq != 1 else ''}"
            return DeadlineExceeded(
                f"the request deadline passed while the answer was streaming, after {chunks}"
                f"{cut_off}",
                headers=named,
            )
        return DeadlineExceeded(
            f"the request deadline passed before an answer arrived{cut_off}", headers=named
        )

    def chunk(self, reply: Reply, now: float) -> bool:
        """A chunk arrived; True if it is the next one (to yield), False to skip it.

        Raises:
            ProviderError: a chunk of another delivery after content (a worker died).
        """
        this = reply.delivery
        if self.delivery is None:
            self.delivery = this
        elif this != self.delivery:
            if self.sent_content:
                raise ProviderError(
                    "the worker streaming this answer failed mid-stream",
                    provider=reply.deployment,
                    code="stream_interrupted",
                )
            self.delivery, self.next_seq, self.gap_since = this, 0, None
        if reply.seq >= 0:
            if reply.seq < self.next_seq:
                return False  # seen: part of a replay
            if reply.seq > self.next_seq:
                self.gap_since = self.gap_since if self.gap_since is not None else now
                return False
            self.next_seq += 1
        self.gap_since = None
        self.sent_content = True
        return True

    def admit(self, reply: Reply, now: float) -> bool:
        """Whether to hand ``reply`` to the caller (chunks once and in order, a stream's final,
        or the error that ends it after its own error event, only after all its chunks; the
        parts of a whole answer as chunks, and its final after all of them)."""
        if reply.kind is ReplyKind.CHUNK:
            return self.chunk(reply, now)
        if reply.kind is ReplyKind.FINAL or (reply.kind is ReplyKind.ERROR and reply.in_stream):
            return self.final(reply, now)  # an error ending a stream also follows its chunks
        if reply.kind is ReplyKind.PART:  # a whole answer's parts: ordered as chunks are
            return self.chunk(reply, now)
        if reply.kind is ReplyKind.KEEPALIVE and reply.delivery:
            self.announced(reply.delivery)
        return reply.kind is not ReplyKind.ACCEPTED  # (one that moved it: ``accepted``)

    def announced(self, delivery: str) -> None:
        """A model-proxy is about to serve ``delivery`` (a redelivered stream).

        Raises:
            ProviderError: another delivery already sent content: this one's chunks could
                not follow it, so the request ends now and its cancel stops the new copy
                before its provider call.
        """
        if self.sent_content and self.delivery is not None and delivery != self.delivery:
            raise ProviderError(
                "the worker streaming this answer failed mid-stream",
                provider="",
                code="stream_interrupted",
            )

    def final(self, reply: Reply, now: float) -> bool:
        """A final message; False while chunks it follows are missing (its replay follows)."""
        if reply.seq > self.next_seq:
            self.gap_since = self.gap_since if self.gap_since is not None else now
            return False
        return True


class Expired:
    """Queued by :class:`Expiry` when a wait's deadline passes."""

    __slots__ = ()


class Expiry:
    """One timer per wait deadline that queues an :class:`Expired` marker, instead of a
    timeout scope around every ``queue.get`` (a Timeout, a timer and a cancellation per reply
    message: ~5% of the edge's CPU on streams). Re-arming for a new deadline replaces the marker,
    so one queued by an earlier deadline is recognised and skipped."""

    __slots__ = ("_handle", "_loop", "_queue", "_until", "marker")

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self._loop = loop
        self._queue = queue
        self._handle: asyncio.TimerHandle | None = None
        self._until = -1.0
        self.marker = Expired()

    def arm(self, until: float) -> None:
        if until == self._until:
            return
        self.cancel()
        self._until = until
        self.marker = marker = Expired()
        self._handle = self._loop.call_at(until, self._queue.put_nowait, marker)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ReplyQueue:
    """Where the reply messages of one attempt of a request wait for its consumer: ``held``,
    what they cost unread (see ``LLMClient.max_unread_bytes``); what a cancel names;
    ``in_parts``: they are a whole answer's parts (bounded by its cap instead)."""

    __slots__ = ("attempt", "env", "held", "in_parts", "on_overflow", "overflowed", "queue")

    def __init__(
        self, env: Envelope, attempt: int, on_overflow: Callable[[ApiError], None] | None
    ) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.env = env
        self.attempt = attempt
        self.on_overflow = on_overflow
        self.held = 0
        self.overflowed = False
        self.in_parts = False

    def takes_past_bound(self, msg: Msg, within: bool) -> bool:
        """Whether these replies, past the client's ``max_unread_bytes``, still take ``msg``:
        an empty final or the terminator (no answer's bytes; a keep-alive only among parts:
        any number of them could come), or a whole answer's parts, which come as fast as the
        model-proxy sends them and are bounded by ``max_answer_bytes`` instead (``within``:
        the held bytes are within that cap). Asked only past the bound: a small answer pays
        nothing for it."""
        kind = msg.headers.get(KIND) if msg.headers else None
        if not self.in_parts:
            self.in_parts = kind == ReplyKind.PART.value
        if not msg.data:  # a keep-alive (the heartbeat's, among parts) only within the cap
            return kind is None or kind == ReplyKind.FINAL.value or within
        return self.in_parts and within
