"""Publishing a routed request onto its deployment's JetStream work queue.

The publish is retried while JetStream is briefly unavailable (a stream leader election takes
~1-2 s in a cluster), with ``Nats-Msg-Id`` set so a retry that did land is stored only once. A
full queue (discard-new per subject) is not retried: it is answered with 503 at once, with a
``Retry-After`` the caller works out only then (see :mod:`switchyard.workers.head.queue_room`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from switchyard.bus import subjects
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.errors import BusError, DeadlineExceeded, RateLimited, ServiceUnavailable
from switchyard.runtime.jetstream import AckPublisher, StreamRejected

log = logging.getLogger("switchyard.head")

# JetStream's answer when discard-new per subject refuses a message.
_FULL = ("maximum messages per subject exceeded", "maximum messages exceeded")


async def publish_dispatch(
    publisher: AckPublisher,
    deployment_id: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    retries: int,
    deadline: Deadline,
    room_in: Callable[[str, bool], float],
    subject: str = "",
) -> None:
    """Store the request in ``llm.v1.dispatch.<deployment_id>``, or in ``subject`` (its HOLD
    queue while the deployment is saturated). ``room_in(deployment_id, held)`` gives the
    ``Retry-After`` of a full queue (``held``: the tenant's HOLD queue); called only then.

    Raises:
        ServiceUnavailable: the queue is full (code ``queue_full``) or JetStream stayed
            unavailable through every retry.
        RateLimited: the tenant's own HOLD queue is full (code ``tenant_queue_full``).
        DeadlineExceeded: the deadline passed while retrying.
    """
    subject = subject or subjects.dispatch(deployment_id)
    for attempt in range(retries + 1):
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("the request deadline passed before it could be queued")
        try:
            await publisher.publish(subject, body, headers, min(timeout, remaining))
            return
        except StreamRejected as exc:
            if any(marker in exc.description.lower() for marker in _FULL):
                held = subject.startswith(subjects.HOLD_PREFIX)
                wait = room_in(deployment_id, held)
                if held:
                    raise RateLimited(
                        f"your queue for deployment {deployment_id} is full; retry later",
                        code="tenant_queue_full",
                        retry_after=wait,
                    ) from None
                raise ServiceUnavailable(
                    f"the queue for deployment {deployment_id} is full; retry later",
                    code="queue_full",
                    retry_after=wait,
                ) from None
            if attempt == retries:
                raise ServiceUnavailable(
                    f"could not queue the request: {exc.description}", code="queue_unavailable"
                ) from None
        except BusError as exc:
            if attempt == retries:
                raise ServiceUnavailable(
                    "the request queue is unavailable; retry later", code="queue_unavailable"
                ) from exc
        pause = min(1.0, 0.25 * (attempt + 1))
        log.warning(
            "dispatch publish to %s failed (attempt %d of %d); retrying in %.2fs",
            subject,
            attempt + 1,
            retries + 1,
            pause,
        )
        await asyncio.sleep(pause)


def msg_id(env: Envelope) -> str:
    """The dedup key: one per (request, client attempt, reroute hop, caller's reply subject).

    What it must deduplicate is this head's own publish retries. Callers choose the request id
    and attempt (an HTTP client's X-Request-Id becomes the request id), so without the reply
    subject, which is new for every caller attempt, two requests that reused an id were one
    message to JetStream: the second caller got `accepted`, then silence until its deadline.
    """
    return f"{env.request_id}:{env.attempt}:{env.hop}:{env.reply}"
