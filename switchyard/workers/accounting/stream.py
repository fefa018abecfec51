"""Which ``USAGE`` stream a usage message came from: the instance, named by its creation time.

Accounting remembers applied batches by their stream sequence (``limits.keys.applied``). A
stream deleted and created again numbers its messages from 1 again, so those bits are kept per
stream instance, and the instance is known by the creation time in the stream's info.

The stream can be recreated while accounting runs, with no word to it, so one answer is not
trusted forever: a message stored no later than the server's clock in the last answer (plus
:data:`SLACK_US`) belongs to the stream that answer named, or to one deleted before it (stored
before that stream's creation: see :meth:`StreamInstance.holds`); a newer message waits for a
fresh answer, which every message waiting meanwhile shares. So accounting asks about once a
second under steady traffic, whatever the load.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from switchyard.errors import BusError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_NS_PER_S = 1_000_000_000
# After a failed question, how long batches go without asking again (each is then billed by its
# events' ids alone, see Accounting.handle): a server that refuses the question (a NATS config
# rendered before accounting needed it) must not cost every batch a timeout.
RETRY_S = 30.0
# An answer also covers messages stored up to this long after it whose sequence is past the
# stream's last one then (a message of the same stream stored later has a higher sequence; a
# recreated stream's first ones do not): asking for every newer message cost a request per
# pull (per batch when traffic is light: ~+100 µs of accounting and +140 µs of nats-server CPU
# per request at one client). Only a recreated stream that outgrew the old one's last sequence
# within this second could pass for it (recreating USAGE is a manual act).
SLACK_US = 1_000_000


def micros(when: dt.datetime) -> int:
    """Microseconds since the epoch, exact (a float would round)."""
    return (when - _EPOCH) // _MICROSECOND


class Place(NamedTuple):
    """Where a delivered message sits in its stream."""

    seq: int  # its stream sequence
    stored_us: int  # when the stream stored it: microseconds since the epoch, server's clock


def place_of(reply: str | None) -> Place | None:
    """The place of a JetStream delivery, read from its reply subject.

    That subject is ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.
    <stored ns>.<pending>``, or the newer form with a domain and an account hash before the
    stream (and a token after). nats-py's ``msg.metadata`` reads the same fields but builds a
    datetime and three objects per message, which accounting would only turn back into
    integers (~6 µs a batch). None when the subject is not such an acknowledgement subject.
    """
    if not reply:
        return None
    tokens = reply.split(".")
    if len(tokens) == 9:
        first = 5
    elif len(tokens) >= 11:
        first = 7
    else:
        return None
    if tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    seq, stored_ns = tokens[first], tokens[first + 2]
    if not (seq.isdecimal() and stored_ns.isdecimal()):
        return None
    return Place(int(seq), int(stored_ns) // 1000)


class StreamInstance(msgspec.Struct, frozen=True, kw_only=True):
    """One life of the stream, as one answer about it described it."""

    created_us: int  # when the stream was created: its identity across deletions
    max_age_s: float  # how long it keeps a message (0: no limit)
    checked_us: int  # the server's clock when it answered (0: not said)
    last_seq: int  # the stream's last sequence when it answered
    number: int  # which answer this is, counted from 1

    def holds(self, stored_us: int) -> bool:
        """False for a message stored before this stream existed: a deleted stream's, handled
        late (or one stored after the server's clock went back)."""
        return stored_us >= self.created_us


class _ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    description: str = ""


class _Config(msgspec.Struct, frozen=True):
    max_age: int = 0  # nanoseconds


class _State(msgspec.Struct, frozen=True):
    last_seq: int = 0


class _Info(msgspec.Struct, frozen=True):
    created: dt.datetime | None = None
    state: _State = _State()
    ts: dt.datetime | None = None
    config: _Config = _Config()
    error: _ApiError | None = None


_INFO = msgspec.json.Decoder(_Info)


def parse_stream_info(data: bytes, number: int) -> StreamInstance:
    """The instance a JetStream ``STREAM.INFO`` reply describes.

    Raises:
        BusError: the reply is an API error (such as "stream not found") or unreadable.
    """
    try:
        info = _INFO.decode(data)
    except msgspec.DecodeError as exc:
        raise BusError(f"unreadable stream info: {exc}") from exc
    if info.error is not None:
        raise BusError(f"stream info refused ({info.error.code}): {info.error.description}")
    if info.created is None:
        raise BusError("stream info without a creation time")
    return StreamInstance(
        created_us=micros(info.created),
        max_age_s=info.config.max_age / _NS_PER_S,
        checked_us=micros(info.ts) if info.ts is not None else 0,
        last_seq=info.state.last_seq,
        number=number,
    )


Ask = Callable[[], Awaitable[bytes]]


def api_ask(nc: NATS, subject: str, timeout: float, what: str) -> Ask:
    """A question to the JetStream API of ``nc`` on ``subject`` (empty body), answered within
    ``timeout``; a failure is a :class:`BusError` saying "no ``what``"."""

    async def ask() -> bytes:
        try:
            reply = await nc.request(subject, b"", timeout=timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"no {what}: {type(exc).__name__}") from exc
        return reply.data

    return ask


class UsageStream:
    """Answers "which instance of the stream did this message come from", asking NATS only
    when the last answer may be out of date, and once for every message waiting meanwhile."""

    def __init__(
        self,
        ask: Ask,
        *,
        retry_s: float = RETRY_S,
        slack_us: int = SLACK_US,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._slack_us = slack_us
        self._retry_s = retry_s
        self._clock = clock
        self._failed_at = -math.inf  # the clock when the last question failed
        self._known: StreamInstance | None = None
        self._begun = 0  # answers asked for so far
        self._finished = 0  # answers come back or failed
        self._failure = ""  # why the last one failed ("" if it did not)
        self._lock = asyncio.Lock()

    @classmethod
    def over(cls, nc: NATS, stream: str, timeout: float) -> UsageStream:
        """Ask the JetStream API of ``nc`` about ``stream``, each time within ``timeout``."""
        subject = f"$JS.API.STREAM.INFO.{stream}"
        return cls(api_ask(nc, subject, timeout, f"info on stream {stream}"))

    def _covers(self, known: StreamInstance | None, stored_us: int, seq: int) -> bool:
        """Whether ``known`` answers for a message stored at ``stored_us`` as ``seq``."""
        if known is None:
            return False
        if stored_us <= known.checked_us:
            return True
        return stored_us <= known.checked_us + self._slack_us and seq > known.last_seq

    async def instance_of(self, stored_us: int, seq: int = 0) -> StreamInstance:
        """The instance known when a message stored at ``stored_us`` (microseconds since the
        epoch, the server's clock) had arrived; check it with :meth:`StreamInstance.holds`.

        Raises:
            BusError: the stream's info could not be had (now, or within ``retry_s`` before).
        """
        known = self._known
        if known is not None and self._covers(known, stored_us, seq):
            return known
        if self._failure and self._clock() - self._failed_at < self._retry_s:
            raise BusError(self._failure)
        # Any answer begun from now on is about a stream that existed after this message came.
        need = self._begun + 1
        finished = self._finished
        async with self._lock:
            known = self._known
            if known is not None and (self._covers(known, stored_us, seq) or known.number >= need):
                return known
            if self._failure and self._finished > finished:
                # Failed while this message waited: the batch is retried later either way, so
                # the waiting messages do not each wait out another timeout.
                raise BusError(self._failure)
            self._begun += 1
            try:
                known = parse_stream_info(await self._ask(), self._begun)
            except BusError as exc:
                self._failure = str(exc)
                self._failed_at = self._clock()
                raise
            except asyncio.CancelledError:
                self._failure = "asking for the stream's info was cancelled"
                raise
            finally:
                self._finished += 1
            self._failure = ""
            self._known = known
            return known
