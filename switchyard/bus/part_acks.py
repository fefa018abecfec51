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
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus.replies import send_part

__all__ = ["ACK_WAIT_S", "PART_BYTES", "WINDOW", "Unacknowledged", "send_acked_parts"]

WINDOW = 2  # parts sent and not yet acknowledged, at most
PART_BYTES = 1024 * 1024  # each part's most bytes (a message carries 8 MiB: kept smaller)
ACK_WAIT_S = 10.0  # the longest the oldest part sent waits for its acknowledgement
_STATUS = "Status"  # nats-server's status header...
_NO_RESPONDERS = "503"  # ...saying nobody listens where the part went


class Unacknowledged(Exception):
    """The caller did not acknowledge a part in time: the rest of the answer is not sent."""

    def __init__(self, sent: int, acked: int, wait_s: float) -> None:
        super().__init__(f"{sent} parts sent, {acked} acknowledged after {wait_s:g} s")
        self.sent = sent
        self.acked = acked


class _Acks:
    """The acknowledgements of one answer's parts: how many parts, in order, the caller has."""

    __slots__ = ("count", "gone", "heard")

    def __init__(self) -> None:
        self.count = 0
        self.gone = False  # the server said nobody listens at the caller's reply subject
        self.heard = asyncio.Event()

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
            left = until - loop.time()
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
) -> int:
    """``body`` as parts of at most ``room`` (and :data:`PART_BYTES`) bytes each, in order,
    never more than ``window`` of them unacknowledged; how many were sent (the ``Sy-Seq`` of
    the final that follows them). The last ones' acknowledgements are not waited for: the
    final is small.

    Raises:
        Unacknowledged: the caller acknowledged nothing for ``wait_s``: nothing more is sent.
    """
    size = min(room, PART_BYTES)
    inbox = nc.new_inbox()
    acks = _Acks()
    sub = await nc.subscribe(f"{inbox}.*", cb=acks.on_ack)
    try:
        count = 0
        for start in range(0, len(body), size):
            if count >= window:
                await acks.within(count, window, wait_s)
            await send_part(
                nc, reply, count, body[start : start + size], delivery, ack=f"{inbox}.{count}"
            )
            count += 1
        return count
    finally:
        with contextlib.suppress(Exception):  # a closed connection drops it anyway
            await sub.unsubscribe()
