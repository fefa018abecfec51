"""The head's read-only view of client keys, for re-checking every request's key and model.

The keys live in the CLIENT account's KV bucket; CLIENT exports its change stream and its
direct-get API to CORE (read-only). A key is fetched on first sight and then kept current by the
change stream, so a revocation reaches every head as fast as it reaches every edge. Unknown keys
are remembered as unknown for a short time only, so a key created a moment ago is not refused
for long. A key whose record does not decode is refused (401 ``invalid_api_key``) until a
readable revision replaces it; the log names its key id once, never the key.

The change stream is plain NATS delivery: a change published while a head reconnects (a NATS
node loss) never reaches it, and the record it kept would have served on forever (a revoked
key's internal client, which no edge checks, kept working until the head restarted). So a key
in use is read again in the background once ``REVALIDATE_S`` passed since its record was last
read or changed, and at its first use after a reconnect; the record kept answers meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchyard.bus import subjects
from switchyard.errors import AuthenticationFailed, ServiceUnavailable
from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor
from switchyard.schemas.keys import (
    KEY_DECODER,
    KEY_READ_ERRORS,
    RECORD_PREFIX,
    ClientKey,
    record_name,
    unreadable_key_id,
)
from switchyard.workers.head.spent_keys import SpentKeys

log = logging.getLogger("switchyard.head")

NEGATIVE_TTL_S = 2.0
REVALIDATE_S = 30.0  # a key in use is read again this long after its record was last read
# A direct get is answered by any replica, and one that is behind the write (nats-server lets
# a follower answer once it is 90% caught up) says "no such key" for a key created a moment
# ago: asked again after these pauses before the key is called unknown (a 401 for 2 s).
_ABSENT_AGAIN_S = (0.05, 0.2)
_CHANGE_PREFIX = f"$KV.{subjects.KEYS_BUCKET}.{RECORD_PREFIX}"


class KeyPolicies:
    def __init__(
        self, nc: NATS, *, revalidate_s: float = REVALIDATE_S, spent: SpentKeys | None = None
    ) -> None:
        self._nc = nc
        self._spent = spent  # keys whose budget is used up (none followed: never refused)
        self._revalidate_s = revalidate_s
        self._known: dict[str, ClientKey] = {}
        self._read_at: dict[str, float] = {}  # digest -> when its kept record was read
        self._reconnects = 0  # the connection's count when the kept records were last trusted
        # A read that started before a change arrived may bring the record before it: the
        # change wins (``_changes`` counts changes heard, ``_changed`` the last per key).
        self._changes = 0
        self._changed: dict[str, int] = {}
        self._missing: dict[str, float] = {}
        self._unreadable: set[str] = set()  # digests whose record does not decode
        self._sub: Subscription | None = None
        self._pending: dict[str, asyncio.Future[ClientKey | None]] = {}
        self._fetches = TaskSupervisor("key-fetch")

    async def start(self) -> None:
        if self._spent is not None:
            await self._spent.start()
        self._sub = await self._nc.subscribe(subjects.KEYS_CHANGES, cb=self._on_change)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        await self._fetches.cancel_all()
        if self._spent is not None:
            await self._spent.stop()

    def check_budget(self, key: ClientKey) -> None:
        """Refuse ``key`` when its budget is used up (:mod:`.spent_keys`).

        Raises:
            RateLimited: 429 ``budget_exceeded``, as the HTTP edges answer.
        """
        if self._spent is not None:
            self._spent.check(key)

    async def _on_change(self, msg: Msg) -> None:
        if not msg.subject.startswith(_CHANGE_PREFIX):
            return
        digest = msg.subject[len(_CHANGE_PREFIX) :]
        self._reconnected()  # before this change's record is kept: it is heard, so current
        if not self._pending:  # only reads in flight compare with it
            self._changed.clear()
        self._changes += 1
        self._changed[digest] = self._changes
        deleted = bool(msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"))
        self._missing.pop(digest, None)
        self._unreadable.discard(digest)
        if deleted or not msg.data:
            self._forget(digest)
            return
        with contextlib.suppress(AuthenticationFailed):  # refused when a request brings it
            self._read(digest, msg.data)

    async def get(self, digest: str) -> ClientKey | None:
        """The key with this SHA-256, or None if no such key exists.

        Raises:
            ServiceUnavailable: the key store cannot be read right now.
            AuthenticationFailed: the key's record does not decode.
        """
        known = self._known.get(digest)
        if known is not None:
            self._maybe_revalidate(digest)
            return known
        if digest in self._unreadable:
            raise _unreadable()
        missing_since = self._missing.get(digest)
        if missing_since is not None and time.monotonic() - missing_since < NEGATIVE_TTL_S:
            return None
        pending = self._pending.get(digest) or self._start_fetch(digest)
        return await asyncio.shield(pending)

    def _maybe_revalidate(self, digest: str) -> None:
        """Read a kept record again in the background when it is old or a reconnect may have
        lost its changes (one read at a time; a failed one waits another period)."""
        now = time.monotonic()
        self._reconnected()
        if now - self._read_at.get(digest, 0.0) < self._revalidate_s or digest in self._pending:
            return
        self._read_at[digest] = now
        with contextlib.suppress(SupervisorClosed):
            self._start_fetch(digest, again=True)

    def _start_fetch(self, digest: str, *, again: bool = False) -> asyncio.Task[ClientKey | None]:
        """Read ``digest``'s record in a task that callers asking meanwhile share."""
        task = self._fetches.spawn(self._fetch(digest, self._changes, again=again), quiet=True)
        self._pending[digest] = task
        task.add_done_callback(lambda _f: self._pending.pop(digest, None))
        return task

    def _reconnected(self) -> None:
        """After a reconnect changes may have been missed: every kept record is old."""
        reconnects = self._nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._read_at.clear()

    def _forget(self, digest: str) -> None:
        self._known.pop(digest, None)
        self._read_at.pop(digest, None)

    async def _fetch(self, digest: str, began: int, *, again: bool = False) -> ClientKey | None:
        """Read a key's record; ``began``: the count of changes heard when the read was asked
        for (a change heard since is newer than what the read brings). ``again``: a kept
        record read again, which a "no such key" does not drop (the replica that answered may
        be behind; a deletion is a marker, which does)."""
        subject = (
            f"{subjects.KEYS_DIRECT_GET_PREFIX}.$KV.{subjects.KEYS_BUCKET}.{record_name(digest)}"
        )
        for pause in (*_ABSENT_AGAIN_S, None):
            try:
                msg = await self._nc.request(subject, b"", timeout=2)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                raise ServiceUnavailable(
                    "the client key store is unavailable", code="keys_unavailable"
                ) from None
            if pause is None or (msg.headers or {}).get("Status") != "404":
                break
            await asyncio.sleep(pause)  # a replica behind the write may have answered
        if self._changed.get(digest, 0) > began:  # a change came meanwhile: it is newer
            if digest in self._unreadable:
                raise _unreadable()
            return self._known.get(digest)
        status = (msg.headers or {}).get("Status")
        if again and status == "404":
            return self._known.get(digest)
        if status == "404" or (status is None and not msg.data):
            self._missing[digest] = time.monotonic()
            self._forget(digest)
            return None
        if status is not None:
            raise ServiceUnavailable("the client key store is unavailable", code="keys_unavailable")
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            self._missing[digest] = time.monotonic()
            self._forget(digest)
            return None
        return self._read(digest, msg.data)

    def _read(self, digest: str, raw: bytes) -> ClientKey:
        """Keep the record ``raw``.

        Raises:
            AuthenticationFailed: it does not decode; the key is refused until a readable
                revision arrives.
        """
        try:
            record = KEY_DECODER.decode(raw)
        except KEY_READ_ERRORS:
            self._forget(digest)
            self._unreadable.add(digest)
            log.warning(
                "the record of client key %s cannot be read; its requests are refused",
                unreadable_key_id(raw) or "(no id in the record)",
            )
            raise _unreadable() from None
        self._known[digest] = record
        self._read_at[digest] = time.monotonic()
        return record


def _unreadable() -> AuthenticationFailed:
    return AuthenticationFailed(
        "This API key cannot be used: its stored record cannot be read. An administrator "
        "can revoke it and set it up again."
    )
