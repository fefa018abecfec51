"""Noticing a caller that went away without a cancel (it crashed, or dropped its inbox).

Every :data:`PROBE_S` (the first about a second after a request starts) the keep-alive of a
request in flight goes out as a request, a *probe*: the same message with a reply subject.
Callers may ignore it, as they ignore every keep-alive (docs/nats-api.md); a caller that
answers it (an empty message to its reply subject: :class:`switchyard.client.LLMClient` does)
has said it is there, and from then on a probe it leaves unanswered twice in a row means it is
gone: its request is stopped like one its caller cancelled (:meth:`.cancels.Cancels.gone`),
provider call interrupted, billed for what it cost as a caller that left. A caller that never
answered one is never taken for gone: nothing is known of it.

nats-server's own answer for "nobody listens" (the no-responders status) would need no help
from callers, but it does not cross the account import every caller comes through (measured
with nats-server 2.15.1: a request to the ``_R_`` reply mapping of a requester that closed its
connection times out): it is taken as a miss when it comes.

A probe is timed from when the server has read it (a flush on its connection), not from when
it was written: a connection nats-server stalls for another slow caller delays the probe, and
that delay must not make a live caller look gone. A caller whose own socket is full (it stopped
reading) cannot answer: it is taken for gone, and its call stops instead of running to its end
for a reader the server is about to cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from switchyard.bus import replies
from switchyard.workers.modelproxy.heartbeat import InFlight

log = logging.getLogger("switchyard.modelproxy")

PROBE_S = 3.0  # how often a request in flight asks whether its caller is there
PROBE_WAIT_S = 1.5  # how long a caller has to answer, once the server has read the probe
PROBE_READ_S = 10  # how long the server may take to read it (else nothing is concluded)
PROBE_MISSES = 2  # unanswered in a row, a round apart: the caller is gone
_STATUS = "Status"  # nats-server's status header...
_NO_RESPONDERS = "503"  # ...saying nobody was subscribed to the probed subject
# The longest a caller that answers probes can be gone before its request stops.
NOTICED_WITHIN_S = PROBE_S + 1 + PROBE_MISSES * (PROBE_WAIT_S + 1)


async def probe(entries: list[InFlight], out: NATS) -> None:
    """Probe the callers of ``entries``, whose replies go on ``out``, and act on what comes
    back: the probes are sent, the server confirms it read them (one flush, behind them on the
    connection), and then each caller has :data:`PROBE_WAIT_S` left to have answered."""
    try:
        inbox = out.new_inbox()
        sub = await out.subscribe(f"{inbox}.*")
    except NatsError:
        return  # the connection is closed or failing: nothing can be told
    heard: dict[str, bool] = {}  # answer subject -> answered (False: nobody listens there)
    try:
        for n, entry in enumerate(entries):
            await replies.send_probe(out, entry.reply, f"{inbox}.{n}")
        try:
            await out.flush(timeout=PROBE_READ_S)  # the server has read the probes
        except (TimeoutError, NatsError):
            return  # not read in time, or the connection failed: nothing is concluded
        await _collect(sub, heard, len(entries))
    except NatsError:
        return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    for n, entry in enumerate(entries):
        if heard.get(f"{inbox}.{n}", False):
            _answered(entry)
        else:
            _missed(entry)  # no answer in time, or the server's no-responders status


async def _collect(sub: Subscription, heard: dict[str, bool], expected: int) -> None:
    """The answers that come within :data:`PROBE_WAIT_S` (all of them: stop early)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + PROBE_WAIT_S
    while len(heard) < expected and (left := until - loop.time()) > 0:
        try:
            msg = await sub.next_msg(timeout=left)
        except TimeoutError:
            return
        status = msg.headers.get(_STATUS) if msg.headers else None
        heard.setdefault(msg.subject, status != _NO_RESPONDERS)


def _answered(entry: InFlight) -> None:
    entry.answers_probes = True
    entry.misses = 0


def _missed(entry: InFlight) -> None:
    if not entry.answers_probes:
        return  # a caller that ignores probes, as it may: nothing is known
    entry.misses += 1
    if entry.misses < PROBE_MISSES:
        entry.last_probe -= PROBE_S  # asked again next round
    elif entry.gone is not None:
        log.info("a caller stopped answering its request's probes: the request is stopped")
        entry.gone()
