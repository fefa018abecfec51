"""The chunks of one streamed answer as the model-proxy keeps them: how many were sent, and
their bytes for a replay (``Handler._replay``), up to a bound.

A replay sends an answer again, whole, after a NATS reconnect while it streamed (the caller
cannot be known to have every chunk). Keeping every chunk of every stream in flight for that
rare case cost a model-proxy the sum of its answers in memory (200 answers of 5 MB: 47 ->
465 MB). Past :data:`REPLAY_MAX_BYTES` of one answer no more of its chunks is kept (those
kept are freed as they are measured, a few with each later chunk: below) and that answer can
no longer be replayed: a reconnect while it streamed ends it with an error
(``replay_unavailable``, docs/nats-api.md) instead. The count of chunks sent is kept whatever
the bound: the stream's ``final`` names it.

An answer without the provider's usage is billed by the content its chunks delivered
(:func:`.estimate.chunk_size`, :meth:`SentChunks.generated`): measured from the kept chunks
when the bill asks, so a stream its provider counted, every bench-sized one, pays nothing for
it. Once an answer passes the bound, each later chunk is measured as it passes (only answers
past the bound, and only these), and the chunks kept before it are measured a few at a time
with them (:data:`MEASURED_PER_CHUNK`), each freed once measured: measuring all of them at
the crossing held the event loop 50-120 ms, every stream of the model-proxy with it. Those
still unmeasured when the answer ends are measured by :meth:`SentChunks.settle` before the
bill, in batches with the loop let go between (so are the kept chunks of an answer within the
bound that the bill measures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from nats.aio.client import Client as NATS

from switchyard.bus import pings

# An LLM answer is a few KiB to a few hundred KiB: 4 MiB keeps nearly every answer
# replayable, while a model-proxy with 256 streams in flight holds at most 1 GiB for replays.
REPLAY_MAX_BYTES = 4 * 1024 * 1024
# Past the bound, how many chunks kept before it are measured (and freed) with each later one:
# a few microseconds each, so a chunk never waits long on it.
MEASURED_PER_CHUNK = 8
# How many chunks :meth:`SentChunks.settle` measures between two turns of the event loop.
SETTLE_BATCH = 512


class SentChunks:
    """The chunks sent of one answer: ``len`` counts them all; iterating gives them back, for a
    replay, while :attr:`complete` (their bytes stayed within ``limit``)."""

    __slots__ = (
        "_count",
        "_crossed",
        "_kept",
        "_kept_bytes",
        "_kept_measured",
        "_last_content",
        "_limit",
        "_measured",
        "_size",
        "_unmeasured",
    )

    def __init__(self, limit: int = REPLAY_MAX_BYTES, size: Callable[[bytes], int] = len) -> None:
        """``size`` measures a chunk's generated content (:func:`.estimate.chunk_size`)."""
        self._limit = limit
        self._size = size
        self._count = 0
        self._kept: list[bytes] | None = []
        self._kept_bytes = 0
        # The content measured so far: of the first ``_kept_measured`` kept chunks; past the
        # bound, of every chunk but those kept before it still to be measured (``_unmeasured``,
        # the oldest last).
        self._measured = 0
        self._kept_measured = 0
        self._unmeasured: list[bytes] = []
        self._crossed = -1  # the index of the chunk that passed the bound
        self._last_content = -1  # past the bound: the index of the last chunk with content

    def append(self, payload: bytes) -> None:
        """One more chunk sent: kept for a replay while the answer's bytes fit the bound."""
        self._count += 1
        if self._kept is None:
            self._passed(payload)
            self._measured += self._measure(MEASURED_PER_CHUNK)
            return
        self._kept_bytes += len(payload)
        if self._kept_bytes > self._limit:
            # This answer cannot be replayed now; what was kept is measured with later chunks.
            self._kept_bytes -= len(payload)
            self._unmeasured = self._kept[self._kept_measured :]
            self._unmeasured.reverse()  # popped from the end: the oldest first
            self._kept = None
            self._kept_bytes = sum(map(len, self._unmeasured))
            self._crossed = self._count - 1
            self._passed(payload)
            return
        self._kept.append(payload)

    def _passed(self, payload: bytes) -> None:
        """Measure a chunk sent past the bound (not kept)."""
        size = self._size(payload)
        self._measured += size
        if size:
            self._last_content = self._count - 1

    def content_after(self, mark: int) -> bool:
        """Whether a chunk sent after the first ``mark`` delivered content (the bill asks it of
        the chunks after the provider's usage). Chunks past the bound are known by their
        measure as they passed; of those freed before it, content is assumed."""
        if mark >= self._count:
            return False
        if self._kept is not None:
            return any(self._size(payload) for payload in self._kept[mark:])
        return mark < self._crossed or self._last_content >= mark

    def _measure(self, most: int) -> int:
        """The content of up to ``most`` chunks kept before the bound, freed as measured."""
        pending = self._unmeasured
        total = 0
        for _ in range(min(most, len(pending))):
            payload = pending.pop()
            self._kept_bytes -= len(payload)
            total += self._size(payload)
        return total

    def _measure_kept(self, most: int) -> int:
        """Measure up to ``most`` more of the kept chunks (kept still, for a replay)."""
        kept = self._kept or []
        upto = min(len(kept), self._kept_measured + most)
        total = sum(map(self._size, kept[self._kept_measured : upto]))
        self._kept_measured = upto
        return total

    def _left(self) -> int:
        """How many chunks sent are still to be measured."""
        if self._kept is None:
            return len(self._unmeasured)
        return len(self._kept) - self._kept_measured

    def generated(self) -> int:
        """The generated content, in bytes, of every chunk sent (see the module)."""
        left = self._left()
        self._measured += self._measure(left) if self._kept is None else self._measure_kept(left)
        return self._measured

    async def settle(self) -> None:
        """Measure every chunk not measured yet, letting the event loop run between batches
        (the bill of an answer without the provider's count reads them all), so that
        :meth:`generated` has nothing left to do."""
        while self._left():
            if self._kept is None:
                self._measured += self._measure(SETTLE_BATCH)
            else:
                self._measured += self._measure_kept(SETTLE_BATCH)
            await asyncio.sleep(0)

    @property
    def complete(self) -> bool:
        """Every chunk sent is still kept: the answer can be replayed."""
        return self._kept is not None

    @property
    def kept_bytes(self) -> int:
        return self._kept_bytes

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._kept or ())


REPLAY_LOST = (
    "the connection carrying this answer failed while it streamed, and the answer is too large "
    "to send again; retry the request"
)


def replay_needed(*, answered: bool, ended: bool, reconnected: bool) -> bool:
    """Whether an answer must be sent again, whole: the connection reconnected since the job
    began (what the old one carried may be lost), or the answer went out without its terminator
    (the connection was down then, so the reply path is still open and must be closed by a
    complete copy). One rule for both, so no answer is left without a terminator."""
    return answered and (reconnected or not ended)


def sent_on(out: NATS) -> int:
    """The reconnect count of the connection a copy just sent on ``out`` went with: the
    current one's, or while ``out`` reconnects the next one's (the copy waits in its buffer
    and goes on the new connection: only a break after that can lose it). A closed one is
    not reconnecting: nothing can be sent again on it (a review: a late replay on it raised,
    and the request went unacknowledged, to be served a second time)."""
    return out.stats["reconnects"] + (0 if out.is_connected or out.is_closed else 1)


def late_replay_needed(
    *, answered: bool, reconnected: bool, cancelled: bool, deadline: float, now: float
) -> bool:
    """Whether an answer must be sent again after its bill (:func:`replay_needed` came
    first): the bill waited for its usage to be stored, which goes on the same connection
    (else :meth:`Pings.settled` waited for the server's answer to a ping), and ``reconnected``
    says that connection broke meanwhile. The break was found only then, so the answer's end
    may have gone with it: sent into a NATS node that died before passing it on, while the
    caller, its own connection unbroken, had no reason to stop waiting (a failover test saw
    one such stream end 504 at its deadline). Sent again, whole, after the first copy's
    terminator (a caller that has it all has forgotten the request). Not to a caller that
    left (``cancelled``), nor past the ``deadline`` (unix seconds, 0 for none: the caller's
    own 504 has ended it). A node that dies silently (no reset: a host lost) is found by the
    client's pings (:mod:`switchyard.bus.connect`), after the bill and the ping gave up: not
    covered."""
    return answered and reconnected and not cancelled and (not deadline or now < deadline)


# How long the end of an answer that no stored bill confirmed waits for the server to have
# read it: as long as the usage publisher waits for a store before it tries again.
SETTLE_S = 5.0
_SETTLE_POLL_S = 0.1  # how often that wait looks for a reconnect (which drops the ping)


class Pings:
    """Waits for the server to have read what a connection carried so far: its answer to a
    ping (a PONG comes after everything sent before the PING was processed).

    An answer is acknowledged after its bill, which waits for its usage to be stored on the
    model-proxy's main connection: that store proves the connection carried the answer before
    it. Nothing proves it for an answer that is not billed (a failure that delivered nothing, a
    token count) or that went on a connection of its own (an internal client's, ``internal``):
    its node could die with the answer unread while the request was acknowledged, and the
    caller waited for its deadline (acknowledged over another connection, no redelivery
    either; acknowledged on the same one, a redelivery after ``ack_wait_s``, a second provider
    call, or nothing for a copy :class:`.serving.Serving` takes for served). A ping finds the
    break: the reconnect drops it, and the answer is sent again (:func:`late_replay_needed`).
    Pings still waiting (cut off by a reconnect) are kept here until nats-py gives them up."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Future[None]] = set()

    async def settled(self, nc: NATS, since: int, within: float = SETTLE_S) -> None:
        """Return once the server answered two pings on ``nc`` in a row, or ``nc``
        reconnected past ``since`` (its reconnect count), or after ``within`` seconds (a slow
        connection: what it carries is not sent again). Two, as ``bus.connect.subscribed``
        does: nats-py writes a PING straight to the socket, ahead of what it still buffers
        (an answer's last bytes); the first one's flush writes the buffer, so the second goes
        out behind it. While ``nc`` reconnects no ping is asked: nats-py returns at once then,
        unsent, and the count still reads ``since`` (a review saw an answer lost that way);
        the new connection's count says whether the break came after ``since``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        answered = 0
        while answered < 2 and not nc.is_closed:
            if nc.stats["reconnects"] > since:  # (the count only rises: a break after it)
                return
            if not nc.is_connected:
                if loop.time() >= end:
                    return  # still reconnecting: the caller reads it with :func:`sent_on`
                await asyncio.sleep(_SETTLE_POLL_S)
                continue
            if nc.stats["reconnects"] != since:
                return
            ping = pings.ping(nc)  # never cut short (bus/pings.py); a reconnect drops it
            self._waiting.add(ping)
            ping.add_done_callback(self._done)
            while not ping.done() and nc.stats["reconnects"] == since:
                left = end - loop.time()
                if left <= 0:
                    return
                await asyncio.wait((ping,), timeout=min(_SETTLE_POLL_S, left))
            if ping.done() and nc.is_connected and nc.stats["reconnects"] == since:
                answered += 1

    def _done(self, ping: asyncio.Future[None]) -> None:
        self._waiting.discard(ping)  # its error, a closed connection's, is retrieved by bus.pings

    def __len__(self) -> int:
        return len(self._waiting)
