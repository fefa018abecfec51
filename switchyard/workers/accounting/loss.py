"""Usage batches the ``USAGE`` stream removed before accounting applied them: said, not hidden.

``USAGE`` keeps at most ``streams.usage_max_bytes`` and ``streams.usage_max_age_s`` of usage and
makes room by removing its oldest messages, applied or not (JetStream cannot change a stream's
retention in place). While accounting is stopped or stalled past those limits, the requests in
the removed batches are never billed, and nothing said so: an explorer's 2,500 requests with
accounting paused and a 1 MiB stream were billed 2,330.

The stream's first sequence past the accounting consumer's ack floor + 1 means the messages in
between went before they were acknowledged (up to that many: some above the floor may have been
acknowledged out of order). JetStream moves the floor past such a hole as soon as the next
message is acknowledged, so the check runs when accounting starts, every few seconds, and when
a delivery comes after a gap in stream sequences (before that delivery is acknowledged, which
holds the floor below the hole). Each removed range is reported once: the highest sequence
reported is remembered, per stream instance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from prometheus_client import Counter

from switchyard.errors import BusError
from switchyard.runtime.throttle import Throttle
from switchyard.workers.accounting.stream import Ask, api_ask

log = logging.getLogger("switchyard.accounting")

T = TypeVar("T", "_StreamInfo", "_ConsumerInfo")

CHECK_EVERY_S = 5.0  # the steady check
GAP_CHECK_EVERY_S = 1.0  # at most this often on a gap (several accounting processes see many)
_WARN_EVERY_S = 60.0


class _ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    description: str = ""


class _StreamState(msgspec.Struct, frozen=True):
    first_seq: int = 0


class _StreamInfo(msgspec.Struct, frozen=True):
    created: dt.datetime | None = None
    state: _StreamState = _StreamState()
    error: _ApiError | None = None


class _Seq(msgspec.Struct, frozen=True):
    stream_seq: int = 0


class _ConsumerInfo(msgspec.Struct, frozen=True):
    ack_floor: _Seq = _Seq()
    error: _ApiError | None = None


_STREAM = msgspec.json.Decoder(_StreamInfo)
_CONSUMER = msgspec.json.Decoder(_ConsumerInfo)


def _decode(decoder: msgspec.json.Decoder[T], data: bytes, what: str) -> T:
    try:
        info = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BusError(f"unreadable {what} info: {exc}") from exc
    if info.error is not None:
        raise BusError(f"{what} info refused ({info.error.code}): {info.error.description}")
    return info


class LossWatch:
    """Finds and reports usage batches removed from ``USAGE`` before accounting applied them."""

    def __init__(
        self,
        ask_stream: Ask,
        ask_consumer: Ask,
        lost: Counter,
        *,
        gap_every_s: float = GAP_CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask_stream = ask_stream
        self._ask_consumer = ask_consumer
        self._lost = lost
        self._gap_every_s = gap_every_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._checked_at = -gap_every_s - 1.0
        self._created: dt.datetime | None = None  # the stream instance reported on
        self._reported = 0  # the highest sequence reported lost in it
        self._highest = 0  # the highest stream sequence delivered to this process
        self._warn = Throttle(_WARN_EVERY_S, clock=clock)

    @classmethod
    def over(cls, nc: NATS, stream: str, consumer: str, lost: Counter, timeout: float) -> LossWatch:
        """Ask the JetStream API of ``nc`` about ``stream`` and its ``consumer``."""

        stream_info = f"$JS.API.STREAM.INFO.{stream}"
        consumer_info = f"$JS.API.CONSUMER.INFO.{stream}.{consumer}"
        return cls(
            api_ask(nc, stream_info, timeout, f"answer on {stream_info}"),
            api_ask(nc, consumer_info, timeout, f"answer on {consumer_info}"),
            lost,
        )

    def after_gap(self, seq: int) -> bool:
        """Note a delivery at stream sequence ``seq``; True when it comes after a gap (then
        :meth:`check_gap` before acknowledging it). Call before the handler's first await, in
        delivery order."""
        highest, self._highest = self._highest, max(self._highest, seq)
        return 0 < highest < seq - 1

    async def check_gap(self) -> None:
        """:meth:`check`, unless one ran within ``gap_every_s`` or one is running: with two
        accounting replicas sharing the consumer nearly every delivery follows a gap, and
        while the JetStream API is slow (seconds each) checks queued on the lock would hold
        every delivery's ack (reviewer)."""
        if self._lock.locked() or self._clock() - self._checked_at < self._gap_every_s:
            return
        self._checked_at = self._clock()  # (taken now: the next gap within the period waits)
        await self.check()

    async def check(self) -> int:
        """Compare the stream's first sequence with the consumer's ack floor now; log and
        count a range not reported before. Returns how many batches it reported."""
        async with self._lock:
            self._checked_at = self._clock()
            try:
                # The stream first: the floor only rises meanwhile, so a race undercounts.
                stream = _decode(_STREAM, await self._ask_stream(), "stream")
                floor = _decode(_CONSUMER, await self._ask_consumer(), "consumer").ack_floor
            except BusError as exc:
                if self._warn.ready():
                    log.warning("could not check for usage removed before it was applied: %s", exc)
                return 0
            if stream.created != self._created:  # recreated: sequences start at 1 again
                self._created, self._reported = stream.created, 0
            last_removed = stream.state.first_seq - 1
            since = max(floor.stream_seq, self._reported)
            if last_removed <= since:
                return 0
            count = last_removed - since
            self._reported = last_removed
        self._lost.inc(count)
        log.error(
            "the USAGE stream removed up to %d usage batches (stream sequences %d-%d) before"
            " accounting applied them: the requests in them are not billed. The stream was full"
            " (streams.usage_max_bytes) or they were older than streams.usage_max_age_s; raise"
            " those limits or bring accounting back sooner (see docs/operations.md, Sizing)",
            count,
            since + 1,
            last_removed,
        )
        return count

    async def run(self, every_s: float = CHECK_EVERY_S) -> None:
        """Check every ``every_s`` until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            await self.check()
