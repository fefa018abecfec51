"""Flow control of a whole answer's parts, to a caller that acknowledges them (docs/nats-api.md,
"Answers in parts").

Parts sent back-to-back have no flow control: a model-proxy writes a 60 MB answer as fast as
its socket takes it, and nats-server queues whatever the caller has not read yet on the
caller's connection. Past the server's ``max_pending`` (32 MiB on the rendered configs) the
server cuts that connection as a slow consumer: a few large answers at once to one edge cut
every request the edge had in flight. A caller that says it acknowledges parts
(``Sy-Parts-Ack: 1``: the edges and :class:`switchyard.client.LLMClient`) gets each part as
a request instead, its reply subject an inbox of the model-proxy's, and answers it with an
empty message as it reads it (as it answers a probe: the same ``allow_responses`` right, no
new permission). The model-proxy keeps at most :data:`WINDOW` parts of at most
:data:`PART_BYTES` unacknowledged, so one answer holds at most 2 MiB on the caller's
connection however large it is.

A caller that acknowledges nothing for :data:`ACK_WAIT_S` (it crashed, dropped its inbox, or
its event loop is stuck) is taken for gone: :class:`Unacknowledged` stops the sending, and
its model-proxy ends the request with ``caller_gone`` instead of the rest of the answer.
So is one that acknowledges, but too slowly to be sent the whole answer by a cutoff (its
model-proxy's: the request's deadline, and at most :func:`send_limit`, :data:`SEND_MAX_S`
and a second per MiB of the answer): the send holds a
dispatch slot and the whole answer in memory, and a caller acknowledging a part every
9.9 s must not hold them for ten minutes. A caller that cancels stops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus.replies import send_part

__all__ = [
    "ACK_WAIT_S",
    "PART_BYTES",
    "SEND_MAX_S",
    "SEND_RATE",
    "WINDOW",
    "Stopped",
    "Unacknowledged",
    "send_acked_parts",
    "send_limit",
]

WINDOW = 2  # parts sent and not yet acknowledged, at most
PART_BYTES = 1024 * 1024  # each part's most bytes (a message carries 8 MiB: kept smaller)
ACK_WAIT_S = 10.0  # the longest the oldest part sent waits for its acknowledgement
SEND_MAX_S = 120.0  # the longest a whole answer's parts take, acknowledgements and all...
SEND_RATE = 1024 * 1024  # ...and a second more per MiB of the answer (bytes a second)
_STATUS = "Status"  # nats-server's status header...
_NO_RESPONDERS = "503"  # ...saying nobody listens where the part went


def send_limit(size: int) -> float:
    """The longest the parts of an answer of ``size`` bytes may take: :data:`SEND_MAX_S`
    and a second per MiB (:data:`SEND_RATE`). A flat cutoff cut large answers that a caller
    read as fast as it could (``modelproxy.max_answer_bytes`` of 1 GB in 120 s needs
    8 MiB/s); the request's deadline still bounds it (its model-proxy's)."""
    return SEND_MAX_S + size / SEND_RATE


class Unacknowledged(Exception):
    """The caller did not acknowledge a part in time: the rest of the answer is not sent."""

    def __init__(self, sent: int, acked: int, wait_s: float, *, late: bool = False) -> None:
        said = "by the cutoff" if late else f"after {wait_s:g} s"
        super().__init__(f"{sent} parts sent, {acked} acknowledged {said}")
        self.sent = sent
        self.acked = acked
        self.late = late  # the cutoff passed (the caller acknowledged, too slowly)


class Stopped(Exception):
    """The sender was told to stop (its caller cancelled): nothing more is sent."""


class _Acks:
    """The acknowledgements of one answer's parts: how many parts, in order, the caller has."""

    __slots__ = ("count", "cutoff", "gone", "heard", "stop")

    def __init__(self, cutoff: float, stop: asyncio.Event | None) -> None:
        self.count = 0
        self.cutoff = cutoff  # loop time past which nothing more is sent
        self.gone = False  # the server said nobody listens at the caller's reply subject
        self.heard = asyncio.Event()
        self.stop = stop

    def wake(self, _: object = None) -> None:
        self.heard.set()

    def check(self, sent: int, wait_s: float, now: float) -> None:
        """Raises :class:`Stopped` once told to stop, :class:`Unacknowledged` (late) past
        the cutoff."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        if now >= self.cutoff:
            raise Unacknowledged(sent, self.count, wait_s, late=True)

    async def on_ack(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            self.gone = True
        else:
            seq = msg.subject.rpartition(".")[2]
            if seq.isdecimal():  # parts come in order: one acknowledged, those before it too
                self.count = max(self.count, int(seq) + 1)
        self.heard.set()

    async def within(self, sent: int, window: int, wait_s: float) -> None:
        """Return once fewer than ``window`` of the ``sent`` parts wait for an acknowledgement.

        Raises:
            Unacknowledged: none came for ``wait_s`` (or nobody listens any more).
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        while sent - self.count >= window:
            self.heard.clear()
            now = loop.time()
            self.check(sent, wait_s, now)
            left = min(until, self.cutoff) - now
            if self.gone or left <= 0:
                raise Unacknowledged(sent, self.count, wait_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.heard.wait(), left)


async def send_acked_parts(
    nc: NATS,
    reply: str,
    body: bytes,
    room: int,
    delivery: str,
    *,
    window: int = WINDOW,
    wait_s: float = ACK_WAIT_S,
    send_s: float = SEND_MAX_S,
    stop: asyncio.Event | None = None,
) -> int:
    """``body`` as parts of at most ``room`` (and :data:`PART_BYTES`) bytes each, in order,
    never more than ``window`` of them unacknowledged, all sent within ``send_s``; how many
    were sent (the ``Sy-Seq`` of the final that follows them). The last ones'
    acknowledgements are not waited for: the final is small. ``stop``, once set, ends the
    sending at once (a wait for an acknowledgement too).

    Raises:
        Unacknowledged: the caller acknowledged nothing for ``wait_s``, or too little to be
            sent everything within ``send_s`` (``late``): nothing more is sent.
        Stopped: ``stop`` was set.
    """
    size = min(room, PART_BYTES)
    inbox = nc.new_inbox()
    loop = asyncio.get_running_loop()
    acks = _Acks(loop.time() + send_s, stop)
    woken = None if stop is None else asyncio.ensure_future(stop.wait())
    if woken is not None:
        woken.add_done_callback(acks.wake)
    sub = await nc.subscribe(f"{inbox}.*", cb=acks.on_ack)
    try:
        count = 0
        for start in range(0, len(body), size):
            acks.check(count, wait_s, loop.time())
            if count >= window:
                await acks.within(count, window, wait_s)
            await send_part(
                nc, reply, count, body[start : start + size], delivery, ack=f"{inbox}.{count}"
            )
            count += 1
        return count
    finally:
        if woken is not None:
            woken.cancel()
        with contextlib.suppress(Exception):  # a closed connection drops it anyway
            await sub.unsubscribe()
