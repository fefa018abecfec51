"""The 504 of a held request whose deadline passed before a slot freed for it.

A request waits in HOLD while its deployment is saturated. When its deadline passes there, the
feeder drops it (no slot for it: the model-proxy would refuse it anyway) and answers its caller
here with the 504 the model-proxy gives a request whose deadline passed in dispatch ("the request
deadline passed while it was queued"), naming the limit that set a bus caller's deadline
(``Sy-Deadline-By``). Without it a bus caller heard nothing at all: only an HTTP edge keeps a
timer of its own. Nothing reached a provider, so nothing is billed.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS

from switchyard.bus import replies
from switchyard.config import IngressSettings
from switchyard.control.held import Held
from switchyard.errors import DeadlineExceeded
from switchyard.runtime import deadlines

log = logging.getLogger(__name__)

QUEUED = f"{deadlines.PASSED} while it was queued"


async def answer_expired(nc: NATS, item: Held, ingress: IngressSettings) -> None:
    """Tell ``item``'s caller its deadline passed while it was held (nothing if it gave no
    reply subject); a failed publish is logged, never raised (the caller times out then)."""
    if not item.reply:
        return
    error = deadlines.named(DeadlineExceeded(QUEUED), item.deadline_by, ingress)
    try:
        await replies.send_error(
            nc,
            item.reply,
            error,
            deployment=item.deployment,  # no attempt here: no Sy-Attempts (a caller's
            # re-send count, Sy-Attempt, is no provider attempt)
            request_id=item.request_id,
            priority=item.priority,
        )
    except Exception:  # the connection may be gone: the caller's own timeout is all it gets
        log.warning("could not answer an expired held request", exc_info=True)
