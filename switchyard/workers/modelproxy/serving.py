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

A copy can also be handled just after the job it belongs to ended: JetStream sent it while the
job was served, and it waited behind other messages in a busy process. Messages acknowledged
here whose claim may have lapsed (stored in dispatch ``ack_wait / 2`` or longer before their
ack) are remembered for a while (:data:`DONE_KEPT_S`, at most :data:`DONE_KEPT`), and a copy of
one is acknowledged unserved: its request was answered and billed here. Quick requests, the
common case, are not remembered: their claim cannot have lapsed.

A message is known by its stream and stream sequence: every delivery of it carries the same,
while a reroute (a new hop) or a caller's re-send (a new ``Sy-Attempt``) is a new message.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from switchyard.workers.modelproxy.job import Job

log = logging.getLogger("switchyard.modelproxy")

DONE_KEPT_S = 60.0  # how long an acknowledged message is remembered (at least 3 ack_waits)
DONE_KEPT = 65_536  # ...and how many at most (a few MB), the oldest forgotten first


def message_key(msg: Msg) -> tuple[str, int]:
    meta = msg.metadata
    return meta.stream, meta.sequence.stream


class Serving:
    def __init__(
        self, ack_wait_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._jobs: dict[tuple[str, int], Job] = {}
        # Acknowledged here and possibly delivered again: when they are forgotten (oldest first).
        self._done: dict[tuple[str, int], float] = {}
        self._ack_wait_s = ack_wait_s
        self._kept_s = max(DONE_KEPT_S, 3 * ack_wait_s)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Job) -> None:
        self._jobs[message_key(job.msg)] = job

    def remove(self, job: Job) -> None:
        """``job`` ended. Remembered if it was acknowledged so late that a copy may come."""
        key = message_key(job.msg)
        if self._jobs.get(key) is job:
            del self._jobs[key]
        if job.acked and time.time() - job.dispatched_at >= self._ack_wait_s / 2:
            now = self._clock()
            self._done.pop(key, None)  # re-inserted last: the dict stays in expiry order
            self._done[key] = now + self._kept_s
            self._forget(now)

    def _forget(self, now: float) -> None:
        while self._done:
            key, until = next(iter(self._done.items()))
            if until > now and len(self._done) <= DONE_KEPT:
                return
            del self._done[key]

    def done(self, msg: Msg) -> bool:
        """True when ``msg`` is a later delivery of a message this process acknowledged lately
        (its request was answered and billed here): acknowledge it, do not serve it."""
        if not self._done or msg.metadata.num_delivered < 2:
            return False
        until = self._done.get(message_key(msg))
        if until is None or until <= self._clock():
            return False
        log.info(
            "a request delivered again (delivery %d) after this model-proxy answered it: "
            "not served twice",
            msg.metadata.num_delivered,
        )
        return True

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

    async def copy(self, msg: Msg) -> bool:
        """True when ``msg`` is another delivery of a message served here now (it joins that
        job: :meth:`joined`) or acknowledged here lately (acknowledged unserved: :meth:`done`);
        either way it must not be served itself."""
        if self.joined(msg):
            return True
        if not self.done(msg):
            return False
        with contextlib.suppress(Exception):  # not settled: comes once more, same answer
            await msg.ack()
        return True

    async def ack(self, job: Job) -> None:
        """Acknowledge ``job``'s message, and the later deliveries of it that joined the job.

        A job that ran long enough to need progress signals waits for the server to confirm the
        ack (up to ``ack_wait_s``), its claim kept alive meanwhile: the ack travels behind the
        chunks still queued on the connection, which nats-server may read slowly while an edge
        lags (see :mod:`.heartbeat`), and a plain ack that lands after ``ack_wait`` lets the request
        be delivered again, to another model-proxy, after it was answered. Quick jobs, the common
        case, send a plain ack: no round trip.
        """
        if job.inflight.signalled:
            try:
                await job.msg.ack_sync(timeout=self._ack_wait_s)
            except (TimeoutError, NatsError) as exc:  # sent; unconfirmed: a copy may come
                why = str(exc) or type(exc).__name__
                log.info(
                    "the server did not confirm a request's ack within %.0f s: %s",
                    self._ack_wait_s,
                    why,
                )
        else:
            await job.msg.ack()
        job.acked = True
        for copy in job.inflight.copies:
            with contextlib.suppress(Exception):  # one ack above settles the message already
                await copy.ack()
