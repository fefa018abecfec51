"""The dispatch messages this model-proxy is serving now, so a second delivery of one of them
is not served twice.

JetStream delivers a message again when its claim lapsed (no ack nor progress within the
consumer's ``ack_wait``), even when the worker that holds it is still serving it: a saturated
process can hold its progress signals back (docs/nats-api.md, ``llm.v1.dispatch``). If the
copy comes back to the same process, calling the provider again would cost a second call and
a second bill for one request. The copy joins the serving job instead: its claim is kept
alive with the first delivery's (:class:`.heartbeat.InFlight` ``copies``), and the job
acknowledges both when it is done. A copy that reaches another model-proxy is served there
(nothing here can know it): a second provider call, billed once only when both copies end the
same way (the same event id, :mod:`.billing`).

A message is known by its stream and stream sequence: every delivery of it carries the same,
while a reroute (a new hop) or a caller's re-send (a new ``Sy-Attempt``) is a new message.
"""

from __future__ import annotations

import contextlib
import logging

from nats.aio.msg import Msg

from switchyard.workers.modelproxy.job import Job

log = logging.getLogger("switchyard.modelproxy")


def message_key(msg: Msg) -> tuple[str, int]:
    meta = msg.metadata
    return meta.stream, meta.sequence.stream


class Serving:
    def __init__(self) -> None:
        self._jobs: dict[tuple[str, int], Job] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Job) -> None:
        self._jobs[message_key(job.msg)] = job

    def remove(self, job: Job) -> None:
        key = message_key(job.msg)
        if self._jobs.get(key) is job:
            del self._jobs[key]

    def joined(self, msg: Msg) -> bool:
        """True when ``msg`` is another delivery of a message served here now: it joins that
        job (kept claimed, acknowledged with it) and must not be served itself."""
        job = self._jobs.get(message_key(msg))
        if job is None:
            return False
        job.inflight.copies.append(msg)
        log.info(
            "a request delivered again (delivery %d) while this model-proxy serves it: "
            "not served twice; its claim is kept until the first delivery ends",
            msg.metadata.num_delivered,
        )
        return True


async def ack(job: Job) -> None:
    """Acknowledge ``job``'s message, and the later deliveries of it that joined the job."""
    await job.msg.ack()
    for copy in job.inflight.copies:
        with contextlib.suppress(Exception):  # one ack above settles the message already
            await copy.ack()
