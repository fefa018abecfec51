"""Keep-alives to callers and progress signals to JetStream for slow provider calls.

One ticker per process walks the requests in flight once a second, instead of a timer task per
request: a fast request (the common case) costs a dict insert and delete, nothing more. With
nothing in flight the ticker waits without a timer, so an idle model-proxy is not woken. The
progress signals due in one round are sent together; keep-alives in the background, so a
connection busy with chunks never holds the next round back.

Progress signals go out on a connection of their own (``signals``) when the process has one.
On the connection that carries the chunks they wait behind every byte queued before them, and
nats-server reads that connection slowly exactly when streams are large: while an edge cannot
keep up, it stalls the producer feeding it (up to 10 ms per read; measured in the slow-reader
test: 10,290 stalls while two model-proxies sent 310 MB each). A progress signal behind that
backlog can land after ``ack_wait``, and the request is delivered again while it is served.
Keep-alives stay on the chunks' connection: they are for the caller, in order with its chunks.
A request that needed progress signals has its ack confirmed by the server before they stop
(``Serving.ack``): the ack itself travels behind the chunks.

The chunks' connection is not the same for every caller (``InFlight.out``): the replies of a
caller the head does not vouch for by name (an internal client: its dispatch message carries a
``Sy-Usage-Id``) go on a connection of their own (``internal``) when the process has one. A
caller that stops reading makes nats-server stall the connection that feeds it, every caller's
messages on it included: an internal client that paused its socket held the HTTP edges'
answers for 7 to 9 s (docs/design-notes.md, "Internal clients' replies have a connection of
their own").

Every ``probe_s`` the keep-alive of an internal client's request (``Sy-Usage-Id``) goes out as a
probe instead, chunks or not, to notice a caller that went away without a cancel (:mod:`.probes`,
which the process passes in). The edges' and the batch runner's requests are never probed: they
send ``llm.v1.cancel`` themselves when their client leaves, and an edge busy with its CPU could
leave probe answers queued behind its chunks long enough to look gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.monitor import CallAges

log = logging.getLogger("switchyard.modelproxy")

_PROGRESS = Msg.Ack.Progress  # JetStream's "still working on it" (+WPI)


@dataclass(slots=True)
class InFlight:
    """One request being served; ``touch`` whenever a message goes to the caller."""

    reply: str
    msg: Msg
    last_sent: float
    last_progress: float
    # Later deliveries of the same message that reached this process while it is served
    # here (its claim lapsed): kept claimed too, and acknowledged with it (``Handler``).
    copies: list[Msg] = field(default_factory=list)
    signalled: bool = False  # a progress signal was sent: its ack waits for a confirmation
    out: NATS | None = None  # the connection its replies go on (see the module doc)
    # Probes (.probes): whether its caller is probed at all (only one the head does not vouch
    # for), when the last was sent, how many in a row went unanswered and when the first of
    # them was, whether the caller ever answered one, whether it was stopped for not answering
    # (its caller is told why), and what to do when it is gone (set by .cancels).
    probed: bool = False
    last_probe: float = 0.0
    misses: int = 0
    first_miss: float = 0.0
    answers_probes: bool = False
    silent: bool = False
    gone: Callable[[], None] | None = None
    # What the process's heartbeat says of its calls in flight (:meth:`Heartbeats.ages`):
    # the deployment, when serving began and when the last chunk went (loop time).
    deployment: str = ""
    started: float = 0.0
    last_chunk: float = 0.0
    # Which placement of the request this is (``Envelope.placement``): its keep-alives say it,
    # so a caller ignores one that comes after a reroute's ``accepted`` (docs/nats-api.md).
    placement: int = 0

    def touch(self, now: float) -> None:
        self.last_sent = self.last_chunk = now


class Heartbeats:
    def __init__(
        self,
        nc: NATS,
        *,
        keepalive_s: float,
        progress_s: float,
        probe: Callable[[list[InFlight], NATS], Coroutine[Any, Any, None]] | None = None,
        probe_s: float = 0.0,
    ) -> None:
        self._nc = nc
        # Asks whether a request's caller is still there (.probes), every ``probe_s``.
        self._probe = probe
        self._probe_s = probe_s
        # Where progress signals go: a connection carrying no chunks (see the module doc).
        self.signals: NATS | None = None
        # Where the replies to callers the head does not vouch for go (see the module doc).
        self.internal: NATS | None = None
        self._keepalive_s = keepalive_s
        self._progress_s = progress_s
        self._active: dict[int, InFlight] = {}
        self._busy = asyncio.Event()  # set while requests may be in flight
        self._loops = TaskSupervisor("heartbeats")

    def track(self, reply: str, msg: Msg, deployment: str = "", placement: int = 0) -> InFlight:
        """Start signalling for a request. Its first progress signal is due at the next round
        (a request that ends before costs nothing): the claim's clock started when JetStream
        delivered the message, which a busy process may take seconds to begin serving."""
        now = asyncio.get_running_loop().time()
        unvouched = _unvouched(msg)
        out = self.internal if self.internal is not None and unvouched else self._nc
        entry = InFlight(reply, msg, now, now - self._progress_s, out=out)
        entry.deployment = deployment
        entry.placement = placement
        entry.started = entry.last_chunk = now
        # Only the callers the head does not vouch for are probed: an edge or the batch runner
        # sends llm.v1.cancel when its own client leaves, and a probe's answer queued behind an
        # edge's chunks must not stop the requests of HTTP callers who are still there.
        entry.probed = self._probe is not None and unvouched
        entry.last_probe = now - self._probe_s + 1.0  # the first about a second from now
        self._active[id(entry)] = entry
        self._busy.set()
        return entry

    def untrack(self, entry: InFlight) -> None:
        self._active.pop(id(entry), None)

    def ages(self) -> dict[str, CallAges]:
        """Per deployment, the oldest call in flight here and the longest silence to a caller
        (for the process's heartbeat: ``switchyard top`` reads them from it). One pass over the
        calls in flight, once per heartbeat."""
        now = asyncio.get_running_loop().time()
        oldest: dict[str, float] = {}
        silent: dict[str, float] = {}
        for entry in self._active.values():
            d = entry.deployment
            oldest[d] = max(oldest.get(d, 0.0), now - entry.started)
            silent[d] = max(silent.get(d, 0.0), now - entry.last_chunk)
        return {
            d: CallAges(oldest_s=round(age, 1), silent_s=round(silent[d], 1))
            for d, age in oldest.items()
        }

    def start(self) -> None:
        self._loops.spawn(self._tick())

    async def stop(self) -> None:
        await self._loops.cancel_all()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        keepalives: asyncio.Task[None] | None = None
        probing: asyncio.Task[None] | None = None
        while True:
            if not self._active:  # nothing in flight: sleep without a timer
                self._busy.clear()
                await self._busy.wait()
            await asyncio.sleep(min(1.0, self._keepalive_s / 2))
            now = loop.time()
            # Keep-alives go in the background, and not while the last round's are still being
            # sent: on the chunks' connection a publish waits for its buffer to be written out
            # when it is full, and a round waiting there held back the next progress signals.
            # Probes likewise, apart: a round of them waits for answers (seconds, on a stalled
            # connection), which must hold back no keep-alive.
            can_keepalive = keepalives is None or keepalives.done()
            can_probe = self._probe is not None and (probing is None or probing.done())
            callers: list[InFlight] = []
            probes: list[InFlight] = []
            progress: list[Msg] = []
            for entry in list(self._active.values()):
                self._due(
                    entry,
                    now,
                    callers if can_keepalive else None,
                    probes if can_probe else None,
                    progress,
                )
            if callers:
                keepalives = self._loops.spawn(self._keepalives(callers))
            if probes:
                probing = self._loops.spawn(self._probes(probes))
            if progress:
                # All at once, not one after another: without a signals connection a publish
                # can wait as above, and awaiting each in turn let one round outlast ack_wait.
                await asyncio.gather(*map(self._progress, progress), return_exceptions=True)

    async def _keepalives(self, callers: list[InFlight]) -> None:
        sends = (replies.send_keepalive(c.out or self._nc, c.reply, c.placement) for c in callers)
        await asyncio.gather(*sends, return_exceptions=True)

    async def _probes(self, entries: list[InFlight]) -> None:
        """One round of probes, a batch per connection (one flush each: see :mod:`.probes`)."""
        if self._probe is None:
            return
        by_connection: dict[int, tuple[NATS, list[InFlight]]] = {}
        for entry in entries:
            out = entry.out or self._nc
            by_connection.setdefault(id(out), (out, []))[1].append(entry)
        rounds = (self._probe(batch, out) for out, batch in by_connection.values())
        await asyncio.gather(*rounds, return_exceptions=True)

    def _due(
        self,
        entry: InFlight,
        now: float,
        callers: list[InFlight] | None,
        probes: list[InFlight] | None,
        progress: list[Msg],
    ) -> None:
        """Add what ``entry`` needs now: itself to ``probes`` (a probe is a keep-alive too) or
        else to ``callers`` (None: none of that kind is sent this round), its messages to
        ``progress``. Their times are taken as sent: a failed one, on a closed connection or
        an acked message, is not retried before its next turn."""
        if probes is not None and entry.probed and now - entry.last_probe >= self._probe_s:
            probes.append(entry)
            entry.last_probe = entry.last_sent = now
        elif callers is not None and now - entry.last_sent >= self._keepalive_s:
            callers.append(entry)
            entry.last_sent = now
        if now - entry.last_progress >= self._progress_s:
            progress += (entry.msg, *entry.copies)
            entry.last_progress = now
            entry.signalled = True

    def _progress(self, msg: Msg) -> Coroutine[Any, Any, None]:
        """``msg``'s progress signal, on the signals connection when there is one."""
        if self.signals is not None and msg.reply:
            return self.signals.publish(msg.reply, _PROGRESS)
        return msg.in_progress()


def _unvouched(msg: Msg) -> bool:
    """True for a request whose caller the head does not vouch for by name (not an edge nor
    the batch runner): the head bills it under a usage id of its own (``Sy-Usage-Id``)."""
    return bool(msg.headers and msg.headers.get(h.USAGE_ID))
