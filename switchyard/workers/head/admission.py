"""Straight to dispatch, or wait in HOLD: the head's half of fair queueing.

A deployment with free slots takes requests straight into its dispatch queue (the fast path,
unchanged). Once it is saturated, requests wait in HOLD, one subject per (deployment, priority,
tenant), and the feeder in the control service moves them into dispatch in fair order as slots
free (see ``docs/routing.md``, "How fair queueing works").

Heads learn "saturated" from the feeder's ``sy_sched`` record of the deployment. That record
lags a burst by a few milliseconds, so each head also caps what it sends straight to dispatch:
at most ``ceil(concurrency / heads)`` requests per ``window_s`` (the deployment's recent time
per request: by Little's law, about what this head still has in flight). A burst from idle
therefore overshoots the deployment's concurrency by less than one request per head; the rest
waits in HOLD from the first request on.

The same record bounds what one deployment holds: while it is marked ``full`` (the feeder
counts ``streams.hold_total_limit`` requests or more held for it), a request the head would
hold is refused instead (:meth:`Admission.full`), checked only for a request about to be held.

Records are written only when they change, so their age says nothing; the feeder's lease
(``feeder.leader`` in the same bucket, renewed every 2 s while a control replica feeds) is its
heartbeat. Once the lease has lapsed by more than :data:`LEASE_GRACE_S` and a record is older
than :data:`STALE_S` (no feeder running), the record is ignored: without a feeder, requests go
straight to dispatch, first come first served, rather than wait for a mover that is not there.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque

import msgspec
from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas.scheduling import (
    FEEDER_LEASE_KEY,
    LEASE_DECODER,
    SCHED_DECODER,
    SchedState,
    refuses,
)

STALE_S = 10.0  # a record this recent speaks for itself (one written just now by a feeder)
LEASE_GRACE_S = 4.0  # a lease this long past its expiry: no feeder (a standby takes over first)
KEY_PREFIX = "dep."


def feeder_running(record_at: float, lease_until: float, now: float) -> bool:
    """Whether a saturation record written at ``record_at`` still speaks for a running
    feeder: the feeder's lease is held (or lapsed less than :data:`LEASE_GRACE_S` ago, while
    a standby takes over), or the record itself is recent."""
    return now <= lease_until + LEASE_GRACE_S or now - record_at <= STALE_S


class Admission:
    """Follows ``sy_sched`` and decides, per request, hold or dispatch."""

    def __init__(self, js: JetStreamContext, *, enabled: bool = True) -> None:
        self.enabled = enabled  # off: every request straight to dispatch (first come first served)
        self._states: dict[str, SchedState] = {}
        self._sent: dict[str, deque[float]] = {}
        self._lease_until = 0.0  # the feeder's lease expiry (unix seconds), 0 when none
        self._follower = KvFollower(js, subjects.SCHED_BUCKET, self._on_entry)

    async def start(self) -> None:
        if self.enabled:
            await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        if key == FEEDER_LEASE_KEY:
            # Released (a clean stop) or unreadable: the last expiry stands, so a restart or a
            # handover within the grace keeps heads holding rather than jump HOLD's queue.
            if value:
                with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                    self._lease_until = LEASE_DECODER.decode(value).until
            return
        if not key.startswith(KEY_PREFIX):
            return
        deployment = key[len(KEY_PREFIX) :]
        if value is None:
            self._states.pop(deployment, None)
            return
        try:
            self._states[deployment] = SCHED_DECODER.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._states.pop(deployment, None)

    def _fresh(self, deployment: str, now: float) -> SchedState | None:
        state = self._states.get(deployment)
        if state is None or not feeder_running(state.at, self._lease_until, now):
            return None
        return state

    def held(self, deployment: str, now: float | None = None) -> bool:
        """True while the feeder holds requests for ``deployment`` (new ones wait behind)."""
        state = self._fresh(deployment, time.time() if now is None else now)
        return state is not None and state.held

    def full(self, deployment: str, priority: str, now: float | None = None) -> bool:
        """True while ``deployment`` holds as many requests as it may for ``priority``'s
        class: a request of it must not be held (the caller gets 503 ``queue_full``)."""
        state = self._fresh(deployment, time.time() if now is None else now)
        return state is not None and refuses(state.full, priority)

    def per_request_s(self, deployment: str) -> float | None:
        """The deployment's last measured time per request, however old (a stale measure
        beats none: it sizes a full queue's ``Retry-After``); None when never recorded."""
        state = self._states.get(deployment)
        return state.window_s if state is not None else None

    def direct(self, deployment: str, concurrency: int, now: float | None = None) -> bool:
        """May this request go straight to dispatch? (Counts it when it may.)"""
        moment = time.time() if now is None else now
        state = self._fresh(deployment, moment)
        if state is None:
            return True  # no feeder: first come, first served
        if state.held:
            return False
        share = max(1, math.ceil(concurrency / max(1, state.heads)))
        sent = self._sent.get(deployment)
        if sent is None:
            sent = self._sent[deployment] = deque()
        horizon = moment - state.window_s
        while sent and sent[0] <= horizon:
            sent.popleft()
        if len(sent) >= share:
            return False
        sent.append(moment)
        return True
