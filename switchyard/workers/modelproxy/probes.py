"""Noticing a caller that went away without a cancel (it crashed, or dropped its inbox).

Every :data:`PROBE_S` (the first about a second after a request starts) the keep-alive of an
internal client's request (its dispatch message carries ``Sy-Usage-Id``; the edges' and the batch
runner's requests are never probed: they send ``llm.v1.cancel`` when their client leaves) goes
out as a request, a *probe*: the same message with a reply subject. Callers may ignore it, as
they ignore every keep-alive (docs/nats-api.md); a caller that answers it (an empty message to
its reply subject: :class:`switchyard.client.LLMClient` does) has said it is there, and from
then on it is gone once it left :data:`PROBE_MISSES` probes unanswered in a row, the first of
them at least :data:`GONE_AFTER_S` before the last: its request is stopped like one its caller
cancelled (:meth:`.cancels.Cancels.gone`), provider call interrupted, an error ``caller_gone``
sent ahead of the terminator (a caller still there learns why), billed for what it cost as a
caller that left. A caller that never answered one is never taken for gone (nothing is known of
it), and is no longer probed after :data:`NEVER_ANSWERED` unanswered: each probe to a ``_R_``
subject may leave a reply mapping in nats-server.

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
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from switchyard.bus import pings, replies
from switchyard.errors import ApiError
from switchyard.workers.modelproxy.heartbeat import InFlight

log = logging.getLogger("switchyard.modelproxy")

PROBE_S = 3.0  # how often a request in flight asks whether its caller is there
PROBE_WAIT_S = 1.5  # how long a caller has to answer, once the server has read the probe
PROBE_READ_S = 10  # how long the server may take to read it (else nothing is concluded)
PROBE_MISSES = 3  # unanswered in a row...
GONE_AFTER_S = 15.0  # ...the first at least this long before the last: the caller is gone
NEVER_ANSWERED = 2  # unanswered by a caller that never answered one: it is probed no more
_STATUS = "Status"  # nats-server's status header...
_NO_RESPONDERS = "503"  # ...saying nobody was subscribed to the probed subject
CALLER_GONE = "caller_gone"  # the error code of a request stopped for unanswered probes
# The longest a caller that answers probes can be gone before its request stops: its first
# miss is judged within a round (probe, flush, wait), the rule's span later, then a round more.
_ROUND_S = PROBE_S + 1 + PROBE_WAIT_S + 1
NOTICED_WITHIN_S = GONE_AFTER_S + 2 * _ROUND_S


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
            await replies.send_probe(out, entry.reply, f"{inbox}.{n}", entry.placement)
        if not await pings.answered(out, PROBE_READ_S):  # the server has read the probes
            return  # not read in time, or the connection failed: nothing is concluded
        await _collect(out, sub, heard, len(entries))
    except NatsError:
        return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    now = asyncio.get_running_loop().time()
    for n, entry in enumerate(entries):
        if heard.get(f"{inbox}.{n}", False):
            _answered(entry)
        else:
            _missed(entry, now)  # no answer in time, or the server's no-responders status


async def _collect(out: NATS, sub: Subscription, heard: dict[str, bool], expected: int) -> None:
    """The answers that come within :data:`PROBE_WAIT_S` (all of them: stop early). At the
    deadline, answers the server sent before it are read too (one flush: whatever it wrote
    ahead of its PONG is queued here by then), so an answer waiting in this process's own
    queue is not taken for a miss."""
    loop = asyncio.get_running_loop()
    until = loop.time() + PROBE_WAIT_S
    while len(heard) < expected and (left := until - loop.time()) > 0:
        try:
            _heard(heard, await sub.next_msg(timeout=left))
        except TimeoutError:
            break
    if len(heard) < expected:
        await pings.answered(out, PROBE_READ_S)
        for _ in range(sub.pending_msgs):  # already queued: each comes at once
            with contextlib.suppress(TimeoutError):
                _heard(heard, await sub.next_msg(timeout=1))


def caller_gone() -> ApiError:
    """What a request stopped for unanswered probes ends with (billed 499 as a caller that
    left): a caller still there, whose answers were lost or late, is told what happened."""
    return ApiError(
        f"the request was stopped: its caller did not answer {PROBE_MISSES} probes in a row "
        f"over {GONE_AFTER_S:g} s (docs/nats-api.md, 'A caller that goes away')",
        code=CALLER_GONE,
        status=499,
    )


def _heard(heard: dict[str, bool], msg: Msg) -> None:
    status = msg.headers.get(_STATUS) if msg.headers else None
    heard.setdefault(msg.subject, status != _NO_RESPONDERS)


def _answered(entry: InFlight) -> None:
    entry.answers_probes = True
    entry.misses = 0


def _missed(entry: InFlight, now: float) -> None:
    entry.misses += 1
    if not entry.answers_probes:  # a caller that ignores probes, as it may: nothing is known
        if entry.misses >= NEVER_ANSWERED:
            entry.probed = False  # asked no more (each probe may leave a mapping in the server)
        return
    if entry.misses == 1:
        entry.first_miss = now
    if entry.misses < PROBE_MISSES or now - entry.first_miss < GONE_AFTER_S:
        return  # asked again at the next round
    if entry.gone is not None:
        log.info("a caller stopped answering its request's probes: the request is stopped")
        entry.silent = True  # its caller is told why (.handler)
        entry.gone()
