"""The 504 of a held request whose deadline passed before a slot freed for it.

A request waits in HOLD while its deployment is saturated. When its deadline passes there, the
feeder drops it (no slot for it: the model-proxy would refuse it anyway) and answers its caller
here with the 504 the model-proxy gives a request whose deadline passed in dispatch ("the request
deadline passed while it was queued"), naming the limit that set a bus caller's deadline
(``Sy-Deadline-By``). Without it a bus caller heard nothing at all: only an HTTP edge keeps a
timer of its own. Nothing reached a provider, so nothing is billed.

At most one 504 per request from the feeders: the request leaves HOLD first (one
``STREAM.MSG.DELETE`` of its sequence) and only the feeder whose delete removed it answers; a
second feeder reading it meanwhile (two briefly leading) is told it is gone ("no message
found") and keeps quiet, and a feeder that restarts or takes the lease over cannot read it
again. The rare exception is a request *moved*: it stays in HOLD until its next batched purge,
so one moved just before a restart and expired before that purge is read again, looks never
moved, and is answered here while a model-proxy may serve it too (so can a stored move whose ack
was lost in a dispatch failover and that expires before its retry; see docs/routing.md).
A delete HOLD does not answer (timeouts or no responders: a stream leader election, a
permission refused) leaves the request in HOLD, unanswered, and the feeder tries the delete
again from its tick, one try a tick, for ``DELETE_RETRY_S`` (a delete that did go through comes
back "gone"), or until moved requests of its subject pile up behind it (purges stop below it).
A delete HOLD answers with an error is given up at once. The price: a feeder that dies between
its delete and its publish, a delete that timed out after HOLD took it, or one given up leaves
that caller to its own timeout, as before this answer existed, rather than answer twice. A
publish that fails (the connection is down for a moment) is tried again :data:`TRIES` times in
all.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from switchyard.bus import replies, subjects
from switchyard.config import IngressSettings
from switchyard.control.held import Held
from switchyard.errors import DeadlineExceeded
from switchyard.runtime import deadlines

log = logging.getLogger(__name__)

QUEUED = f"{deadlines.PASSED} while it was queued"
TRIES = 3  # of a delete from HOLD, and of each publish of the answer
RETRY_S = 0.2  # the pause before the second try; 0.4 s before the third
_DELETE_FAILED = 10057  # JetStream: no message at that sequence (any more)
_UNAVAILABLE = 503  # JetStream answered but could not act: no stream leader, or none yet
_JSON = msgspec.json.Encoder()


class Taken(enum.Enum):
    """What a delete of a held request from HOLD found."""

    MINE = "mine"  # this delete removed it: its answer is this feeder's to send
    GONE = "gone"  # removed already (by another feeder): not this one's to answer
    UNKNOWN = "unknown"  # HOLD did not delete it (timeouts, no responders, no leader): not yet
    REFUSED = "refused"  # HOLD answered with an error: trying again would not help


async def expire(nc: NATS, item: Held, ingress: IngressSettings, tries: int = TRIES) -> Taken:
    """Take ``item`` out of HOLD and, if this call took it, tell its caller its deadline passed
    while it was held (nothing if it gave no reply subject). Nothing is raised: a failure is
    logged (the caller then times out). ``tries``: of the delete, while unanswered."""
    taken = await take(nc, item.seq, tries)
    if taken is Taken.MINE:
        await answer(nc, item, ingress)
    elif taken is Taken.GONE:
        log.info("an expired held request (%s) was taken from HOLD already", item.request_id)
    return taken


async def take(nc: NATS, seq: int, tries: int = TRIES) -> Taken:
    """Delete ``seq`` from HOLD, ``tries`` times at most while unanswered (see
    :class:`Taken`)."""
    api = f"$JS.API.STREAM.MSG.DELETE.{subjects.HOLD_STREAM}"
    payload = _JSON.encode({"seq": seq, "no_erase": True})
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(RETRY_S * attempt)
        try:
            reply = await nc.request(api, payload, timeout=2)
        except (NatsError, TimeoutError):
            continue
        try:
            body = msgspec.json.decode(reply.data)
        except msgspec.DecodeError:
            body = {}
        if isinstance(body, dict) and body.get("success") is True:
            return Taken.MINE
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("err_code") == _DELETE_FAILED:
            return Taken.GONE
        if isinstance(error, dict) and error.get("code") == _UNAVAILABLE:
            continue  # no leader (an election): not deleted, and worth trying again
        log.warning("HOLD refused to delete an expired request: %s", reply.data[:200])
        return Taken.REFUSED
    log.warning("could not delete an expired held request from HOLD: not answered")
    return Taken.UNKNOWN


async def answer(nc: NATS, item: Held, ingress: IngressSettings) -> bool:
    """Send ``item``'s caller its 504 (True if sent, or nobody to tell): the error, then the
    terminator, each tried :data:`TRIES` times (never the error twice)."""
    if not item.reply:
        return True
    error = deadlines.named(DeadlineExceeded(QUEUED), item.deadline_by, ingress)

    async def the_error() -> None:
        await replies.send_error(
            nc,
            item.reply,
            error,
            deployment=item.deployment,  # no attempt here: no Sy-Attempts (a caller's
            # re-send count, Sy-Attempt, is no provider attempt)
            request_id=item.request_id,
            priority=item.priority,
            end=False,  # (the terminator apart: a retry must not send the error again)
        )

    async def the_end() -> None:
        await replies.end_stream(nc, item.reply)

    if await retried(the_error) and await retried(the_end):
        return True
    log.warning("could not answer an expired held request (%s)", item.request_id)
    return False


async def retried(send: Callable[[], Awaitable[None]], tries: int = TRIES) -> bool:
    """Run ``send`` until it returns, ``tries`` times at most with a growing pause between
    (:data:`RETRY_S`, then twice it...); True if one try went through."""
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(RETRY_S * attempt)
        try:
            await send()
            return True
        except (NatsError, OSError, TimeoutError) as exc:  # down for a moment: once more
            log.debug("publish failed (try %d of %d): %r", attempt + 1, tries, exc)
    return False
