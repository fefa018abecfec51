"""The head's view of the keys whose budget is used up: the ``sy_key_spent`` bucket, followed
live into memory, so a request is checked without a round trip (``limits.spent_marks``).

Every request the head routes is checked, whoever sent it: an internal client over the NATS
API (which no edge checks: the reason for the marks), and the edges and the batch runner too,
which checked the key's spend before sending and so are refused here only in the moments the
two views differ (the answer is the same 429 either way).

The marks are not worth a head that does not serve: one that cannot follow the bucket when it
starts (no ``sy_key_spent`` bucket before ``switchyard provision``, or no read access to it
before the NATS config is rendered again: a timeout) logs an error and serves on, refusing no
key for its budget (as before budgets bound NATS callers), and tries again every ``retry_s``
in the background (waiting twice as long each time, up to ``RETRY_MAX_S``, with a warning
every ``RETRY_MAX_S``) until it follows the bucket; ``switchyard_head_spent_following`` is 0
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from switchyard.runtime import semconv as sc
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor
from switchyard.schemas.keys import ClientKey

log = logging.getLogger("switchyard.head")


RETRY_S = 10.0  # how soon a head that could not follow the bucket tries again...
RETRY_MAX_S = 300.0  # ...doubling the wait up to this (an old NATS config logs each try)
# Raised by a follow that could not start: no bucket (NotFoundError is a NatsError), no
# permission (a timeout), or the connection lost meanwhile.
_FOLLOW_ERRORS = (NatsError, TimeoutError, OSError)


class SpentKeys:
    def __init__(
        self, js: JetStreamContext, metrics: Metrics | None = None, *, retry_s: float = RETRY_S
    ) -> None:
        self._js = js
        self._retry_s = retry_s
        self._marks: dict[str, SpentMark] = {}  # key id -> mark
        self._follower: KvFollower | None = None  # set once following
        self._loops = TaskSupervisor("spent-keys")
        if metrics is not None:
            metrics.gauge_callback(
                sc.HEAD_SPENT_KEYS,
                "Spent marks this head holds, kept by a gateway (not stale): keys it refuses "
                "while their mark covers them (0 while it cannot follow the sy_key_spent "
                "bucket).",
                (),
                lambda: [((), float(self.held()))],
            )
            metrics.gauge_callback(
                sc.HEAD_SPENT_FOLLOWING,
                "1 while this head follows the sy_key_spent bucket, 0 while it cannot (it then "
                "refuses no key for its budget: NATS callers are not bound).",
                (),
                lambda: [((), 1.0 if self.following else 0.0)],
            )

    def held(self, now: float | None = None) -> int:
        """How many marks are held that are not stale (one the bucket's TTL removed is held
        until the head restarts, as heads are not told: it is stale by then)."""
        moment = time.time() if now is None else now
        return sum(1 for m in self._marks.values() if moment - m.written_at <= spent_marks.STALE_S)

    @property
    def following(self) -> bool:
        """Whether the bucket is followed (else no key is refused for its budget)."""
        return self._follower is not None

    def _on_entry(self, name: str, value: bytes | None, revision: int) -> None:
        if value is None:
            self._marks.pop(name, None)
            return
        try:
            mark = spent_marks.decode(value)
        except spent_marks.READ_ERRORS:
            self._marks.pop(name, None)
            log.warning("ignored an unreadable spent mark (revision %d)", revision)
            return
        self._marks[mark.key_id] = mark

    async def start(self) -> None:
        """Follow the bucket; when that fails, serve on and try again in the background."""
        if await self._follow():
            return
        log.error(
            "cannot follow the %s bucket: NATS callers are not refused when their key's budget "
            "is used up until it can be (run `switchyard provision` and render the NATS config "
            "after an upgrade); trying again in %.0f s, then less often",
            subjects.KEY_SPENT_BUCKET,
            self._retry_s,
        )
        with contextlib.suppress(SupervisorClosed):
            self._loops.spawn(self._follow_later(), name="spent-keys-follow")

    async def _follow(self) -> bool:
        follower = KvFollower(self._js, subjects.KEY_SPENT_BUCKET, self._on_entry)
        try:
            await follower.start()
        except _FOLLOW_ERRORS as exc:
            await follower.stop()
            self._marks.clear()  # what a failed start delivered is read again by the next
            log.debug("could not follow %s: %r", subjects.KEY_SPENT_BUCKET, exc)
            return False
        except BaseException:  # cancelled (a stop) mid-start: its watch must not outlive it
            await follower.stop()
            raise
        self._follower = follower
        return True

    async def _follow_later(self) -> None:
        wait, warned = self._retry_s, time.monotonic()
        while True:
            await asyncio.sleep(wait)
            wait = min(wait * 2, max(RETRY_MAX_S, self._retry_s))
            if time.monotonic() - warned >= RETRY_MAX_S:
                warned = time.monotonic()
                log.warning(
                    "still cannot follow the %s bucket: NATS callers are not refused when "
                    "their key's budget is used up (switchyard_head_spent_following is 0)",
                    subjects.KEY_SPENT_BUCKET,
                )
            if await self._follow():
                log.info(
                    "following the %s bucket: spent budgets are refused", subjects.KEY_SPENT_BUCKET
                )
                return

    async def stop(self) -> None:
        """Idempotent."""
        await self._loops.cancel_all()
        if self._follower is not None:
            await self._follower.stop()

    def check(self, key: ClientKey) -> None:
        """Raises: RateLimited: 429 ``budget_exceeded``, ``key``'s budget is used up."""
        refused = spent_marks.refusal(self._marks.get(key.id), key)
        if refused is not None:
            raise refused
