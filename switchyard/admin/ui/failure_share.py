"""The sign-in guard's wrong-token counts, shared by every gateway replica through their own
bucket, ``sy_admin_signin_failures``.

Each wrong admin token (sign-in or ``/admin/v1``) is counted per address by the replica that
got it (:mod:`switchyard.admin.ui.signin_guard`); the address's recent wrong-token times are
then written under ``a.<SHA-256 of the address>`` (the address too: the audit log names it
anyway), in the background, and every replica merges what the others write. They lived in the
sessions' bucket, kept 24 hours with no cap on its size, so anyone could make lasting
JetStream writes by sending wrong tokens, and from endless addresses (an IPv6 client's /64s)
grow the bucket without bound. Now:

* the bucket's entries expire with the guard's window (five minutes: nothing older counts);
* the bucket is capped (``ADMIN_SIGNIN_FAILURES_MAX_BYTES``) and drops its oldest entries
  when full (the provisioner sets that): a flood forgets old counts, and never reaches the
  sessions, in their own bucket;
* each replica writes at most :data:`WRITE_RATE` counts a second (a burst of
  :data:`WRITE_BURST`), whatever is sent: past that a count stays this replica's (a guesser
  spread over the replicas during such a flood gets up to ten on each, as before sharing).

A bucket that cannot be followed (not provisioned yet, or a NATS config without the admin
identity's rights to it) leaves the counts each replica's: a warning, everything else works,
and it is tried again in the background (:func:`~switchyard.runtime.kvwatch.follow_later`)
until it can be followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.admin.ui.signin_guard import SigninGuard
from switchyard.bus import subjects
from switchyard.runtime.kvwatch import RETRY_S, KvFollower, follow_later, try_follow

log = logging.getLogger("switchyard.admin.ui")

PREFIX = "a."
WRITE_RATE = 10.0  # counts written a second, at most, by one replica
WRITE_BURST = 30.0
MAX_WRITES = 100  # counts being written at once; past it one is not shared (a stalled NATS)
# What the log of a bucket not followed advises: for a refusal by NATS (a bucket not
# provisioned, an older NATS config without the rights), and for an error nobody expected.
PROVISION_ADVICE = (
    "Provision (`switchyard provision`, the init Job) with the NATS config of this version"
)
UNEXPECTED = "An unexpected error (its traceback is logged above), not a NATS refusal"
_ENCODE = msgspec.json.Encoder()


class Failures(msgspec.Struct):
    address: str  # as the guard counts it (an IPv6 client's /64)
    times: list[float]  # its wrong tokens within the guard's window


_FAILURES = msgspec.json.Decoder(Failures)


class WriteBudget:
    """A token bucket: ``rate`` writes a second, ``burst`` at once."""

    def __init__(self, rate: float = WRITE_RATE, burst: float = WRITE_BURST) -> None:
        self._rate = rate
        self._burst = burst
        self._left = burst
        self._at = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        self._left = min(self._burst, self._left + max(0.0, moment - self._at) * self._rate)
        self._at = moment
        if self._left < 1.0:
            return False
        self._left -= 1.0
        return True


class FailureShare:
    """Follows the wrong-token bucket into ``guard`` and writes the guard's counts to it."""

    def __init__(self, js: JetStreamContext, guard: SigninGuard, budget: WriteBudget) -> None:
        self._js = js
        self._guard = guard
        self._budget = budget
        self._kv: KeyValue | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._dropped = 0
        self._follower = KvFollower(js, subjects.ADMIN_SIGNIN_FAILURES_BUCKET, self._on_entry)
        self._why = ""  # why the bucket could not be followed, the last time
        self._refused = False  # whether by NATS (not provisioned, no rights), or unexpectedly

    async def start(self, retry_s: float = RETRY_S, tried: asyncio.Event | None = None) -> None:
        """Shares the counts from once the bucket is followed: at once, or, when it cannot be
        (a warning), tried again after ``retry_s``, then less often, until it is (``tried``
        is set once the first try is over)."""
        try:
            followed = await try_follow(self._follow)
        finally:  # (set whatever happens: the gateway's start must not wait its whole bound)
            if tried is not None:
                tried.set()
        if followed:
            return
        log.warning(
            "wrong admin tokens are counted by this gateway replica only: the %s bucket "
            "cannot be followed (%s). %s; trying again in %.0f s, then less often",
            subjects.ADMIN_SIGNIN_FAILURES_BUCKET,
            self._why,
            PROVISION_ADVICE if self._refused else UNEXPECTED,
            retry_s,
        )
        await follow_later(self._follow, retry_s)
        log.info(
            "wrong admin tokens are counted with the other gateway replicas (the %s bucket is "
            "followed)",
            subjects.ADMIN_SIGNIN_FAILURES_BUCKET,
        )

    async def _follow(self) -> bool:
        try:
            return await self._follow_once()
        except Exception as exc:  # (logged by try_follow, with its traceback)
            self._why, self._refused = type(exc).__name__, False
            raise

    async def _follow_once(self) -> bool:
        follower = KvFollower(self._js, subjects.ADMIN_SIGNIN_FAILURES_BUCKET, self._on_entry)
        try:
            kv = await self._js.key_value(subjects.ADMIN_SIGNIN_FAILURES_BUCKET)
            await follower.start()
        except (NatsError, TimeoutError, OSError) as exc:
            await follower.stop()
            self._why, self._refused = type(exc).__name__, True
            return False
        except BaseException:  # cancelled (a stop) mid-start: its watch must not outlive it
            await follower.stop()
            raise
        self._kv, self._follower = kv, follower
        self._guard.shared = self._share
        return True

    async def stop(self) -> None:
        self._guard.shared = None
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=2.0)
        await self._follower.stop()

    def _share(self, address: str, times: list[float]) -> None:
        """Write an address's wrong-token times, in the background (the answer is not held),
        within the write budget."""
        if len(self._writes) >= MAX_WRITES or not self._budget.take():
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning(
                    "wrong admin tokens come faster than they are shared (%d a second at "
                    "most); %d counted by this gateway replica only",
                    int(WRITE_RATE),
                    self._dropped,
                )
            return
        task = asyncio.get_running_loop().create_task(self._write(address, times))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, address: str, times: list[float]) -> None:
        if self._kv is None:
            return
        key = PREFIX + hashlib.sha256(address.encode()).hexdigest()[:32]
        try:
            await self._kv.put(key, _ENCODE.encode(Failures(address, times)))
        except (NatsError, TimeoutError) as exc:
            log.warning(
                "a wrong admin token was not shared with the other gateways (%s)",
                type(exc).__name__,
            )

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        if key.startswith(PREFIX) and value is not None:
            try:
                failures = _FAILURES.decode(value)
            except msgspec.DecodeError as exc:  # (msgspec.ValidationError is one)
                log.warning("ignored a malformed wrong-token count (%s)", exc)
                return
            self._guard.merge(failures.address, failures.times)
