"""One dispatched request as a model-proxy serves it: where it goes and what happened so far."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope
from switchyard.errors import ApiError
from switchyard.schemas.openai import Usage
from switchyard.schemas.routing import Deployment, Provider
from switchyard.schemas.timeouts import CallTimeouts, call_timeouts
from switchyard.workers.modelproxy import estimate
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.replay import SentChunks


@dataclass(frozen=True, slots=True)
class Target:
    provider_name: str
    provider: Provider
    deployment: Deployment
    # Its calls' timeouts, field by field (the deployment's, the provider's, the default):
    # resolved once per route table, as targets are built.
    timeouts: CallTimeouts = field(init=False)

    def __post_init__(self) -> None:
        timeouts = call_timeouts(self.deployment.timeouts, self.provider.timeouts)
        object.__setattr__(self, "timeouts", timeouts)


@dataclass(slots=True)
class Job:
    """One dispatched request and what happened to it so far."""

    msg: Msg
    env: Envelope
    deployment_id: str
    inflight: InFlight
    started: float = field(default_factory=time.time)
    sent: bool = False  # content reached the caller: never retried after this
    called: bool = False  # the provider was called
    # The provider's usage (the ``usage`` property), and how many chunks were sent before it
    # came: an opening count (Anthropic's message_start) has content after it, a final one not.
    _usage: Usage | None = field(default=None, init=False)
    usage_mark: int = field(default=0, init=False)
    status: int = 200
    ttft: float | None = None  # from pick-up to the first chunk sent
    ttfc: float | None = None  # from the provider call to its first chunk
    called_at: float = 0.0
    # When the head stored it: in HOLD for a request held for fair order, else in dispatch
    # (unix seconds). Its queue wait (metric and span) is measured from it.
    stored_at: float = 0.0
    # When dispatch stored it. The traffic report's latency is measured from it: that is the
    # fair scheduler's time per request, which time held (a wait for a slot) must not swell.
    dispatched_at: float = 0.0
    # The reconnect count, when the job started, of the connection its replies go on.
    reconnects: int = 0
    # What was streamed: counted, and kept for a replay up to a bound (see .replay); measured
    # as its op's chunks for a bill without the provider's count (.estimate).
    chunks: SentChunks = field(init=False)
    answer: bytes | ApiError | None = None  # the final body or error sent, for a replay
    in_stream: bool = False  # the last chunk told the caller of the error, in its dialect
    ended: bool = True  # the answer went out with its terminator (see ``_unbroken``)
    cancelled: bool = False  # the caller left (llm.v1.cancel): nobody to answer
    undelivered: bool = False  # the provider answered, but it could not be passed on
    # A redelivered stream's caller cancelled it on hearing of this delivery: an earlier one
    # had streamed content, and its provider call is billed here (see .redelivery).
    streamed_before: bool = False
    acked: bool = False  # its dispatch message was acknowledged (see .serving)
    # The scope of the provider call while it runs: a cancel ends it at once (see .cancels).
    stop: asyncio.Timeout | None = None
    # Set while its answer goes out in acknowledged parts: a cancel sets it (see .whole).
    parts_stop: asyncio.Event | None = None
    # Its last send of parts ended in a reconnect that lost them: sent again (see .whole).
    parts_lost: bool = False
    # Its answer is being sent again after a reconnect (``replay``), its final not yet: a
    # cancel still stops it (see ``done``, .whole).
    replaying: bool = False

    def __post_init__(self) -> None:
        self.chunks = SentChunks(size=estimate.chunk_size(self.env.op))
        if self.inflight.out is not None:
            self.reconnects = self.inflight.out.stats["reconnects"]
        self.stored_at = self.dispatched_at = self.msg.metadata.timestamp.timestamp()
        held = self.msg.headers.get(h.HELD_SINCE) if self.msg.headers else None
        if held is not None and held.isdecimal() and len(held) <= 16:
            self.stored_at = min(self.stored_at, int(held) / 1000)

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @usage.setter
    def usage(self, usage: Usage | None) -> None:
        self._usage = usage
        self.usage_mark = len(self.chunks)

    @property
    def done(self) -> bool:
        """Its answer is out, or going out: a cancel stops nothing more (but the sending of
        acknowledged parts, and a replay: :mod:`.whole`)."""
        return self.answer is not None and self.parts_stop is None and not self.replaying

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """While its answer is sent again (the handler's replay): ``replaying``, which
        :mod:`.whole` clears as the final goes (a cancel then is too late, as ever)."""
        self.replaying = True
        try:
            yield
        finally:
            self.replaying = False

    def out(self, main: NATS) -> NATS:
        """The connection its replies go on (:mod:`.heartbeat`; ``main`` unless told)."""
        return self.inflight.out or main

    def unbroken(self, main: NATS) -> bool:
        """True while everything sent for it went over one live connection: else what the
        old connection carried may be lost while what was sent while reconnecting gets
        through, and the first copy of the answer must not end the reply path
        (``replies.end_stream``)."""
        out = self.out(main)
        return out.is_connected and out.stats["reconnects"] == self.reconnects

    @property
    def reply(self) -> str:
        return self.env.reply

    @property
    def deadline(self) -> float:
        """Unix seconds (0 when the head stamped none, which it always does)."""
        return self.env.deadline.timestamp if self.env.deadline is not None else 0.0

    @property
    def stream(self) -> bool:
        return self.env.stream

    @property
    def delivery(self) -> str:
        """Client attempt and JetStream delivery: chunks of a redelivery differ from the first."""
        return f"{self.env.attempt}.{self.msg.metadata.num_delivered}"

    @property
    def attempts(self) -> int:
        """This attempt's number (``Sy-Attempts``): the provider attempts before it, as
        ``routing.max_attempts`` counts them (no refusal of a field, ``unfit``), plus one."""
        return self.env.provider_attempts + 1
