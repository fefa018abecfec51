"""Every ingress's local, live copy of the client keys: authentication without a lookup.

It follows the ``sy_keys`` bucket, so creating, revoking or changing a key reaches every ingress
replica within milliseconds of the write, and the request path only hashes the presented key
and reads a dict.

A watch can fall behind (after a NATS node loss a CI run saw both edges miss a key created a
moment before for 4 s, and every request with it was refused). So a key of ours that the copy
does not have is read once from the bucket's stream leader before it is refused
(:meth:`KeyRing.look_up`; any replica when the leader does not answer, as during a failover):
a key created a moment ago works at every edge at once, and a watch that did not deliver it is
opened again within a second (:meth:`KvFollower.behind`). Lookups are bounded: only keys with
our prefix, one read per key at a time, an absent key remembered for a second, and caps on
reads in flight and started per second (past them a key is refused unread).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.errors import AuthenticationFailed, ServiceUnavailable
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.shared_reads import SharedReads
from switchyard.schemas.keys import (
    KEY_DECODER,
    KEY_PREFIX,
    KEY_READ_ERRORS,
    RECORD_PREFIX,
    ClientKey,
    current_key,
    hash_key,
    record_name,
)

log = logging.getLogger("switchyard.ingress.keys")

ABSENT_TTL_S = 1.0  # a key the leader said is absent is not read again for this long
MAX_LOOKUPS = 32  # reads in flight at once; past it an unknown key is refused unread
LOOKUPS_PER_S = 100.0  # reads started per second (a burst of as many); past it: refused unread
_LOOKUP_TIMEOUT_S = 2.0
_STREAM = f"KV_{subjects.KEYS_BUCKET}"
_MAX_KEY_CHARS = 256  # ours are 49; longer is not ours and is not read
# A deleted key's revision is kept this long (a lookup that read the record before the delete
# may still answer: it must not bring the key back), then forgotten: keys come and go.
FORGET_DELETED_S = 60.0


_SEND = (
    "Send it as `Authorization: Bearer sk-sy-...` (or `x-api-key: sk-sy-...`, as Anthropic's "
    "clients do)."
)


def missing_key() -> AuthenticationFailed:
    return AuthenticationFailed(f"You didn't provide an API key. {_SEND}", code="missing_api_key")


def not_bearer(authorization: str) -> AuthenticationFailed:
    """The 401 for an ``Authorization`` header that holds no Bearer token (and no other key
    header): a bare key or another scheme is never looked up. Still ``missing_api_key``, as
    OpenAI answers it (no key was presented in a form that is read; ``invalid_api_key``
    would send the client to replace a key that may be fine), but it says what was wrong.
    Never echoes the value: only a scheme shaped like one (letters first, no key's length).
    The words are the bus's (:func:`switchyard.bus.headers.no_bearer_problem`), so the two
    doors cannot drift apart."""
    problem = h.no_bearer_problem(authorization)
    if not problem:  # empty, or `Bearer` with nothing after it
        return missing_key()
    return AuthenticationFailed(
        f"{problem}. {_SEND.replace('it', 'the key', 1)}", code="missing_api_key"
    )


class KeyRing:
    """``on_refused(key_id, error)`` hears of every key that may no longer be used (revoked,
    or deleted), so the requests it has in progress can end (:meth:`Waiting.refuse`)."""

    def __init__(
        self,
        js: JetStreamContext,
        on_refused: Callable[[str, AuthenticationFailed], object] | None = None,
        *,
        lookups_per_s: float = LOOKUPS_PER_S,
    ) -> None:
        self._rate = lookups_per_s
        self._tokens = lookups_per_s
        self._filled_at = time.monotonic()
        self._js = js
        self._by_hash: dict[str, ClientKey] = {}
        # Key id -> how many live records (not retired) hold it: two during a rotation.
        self._live: collections.Counter[str] = collections.Counter()
        self._revisions: dict[str, int] = {}  # digest -> the revision applied (deletes too)
        self._deleted: collections.deque[tuple[float, str, int]] = collections.deque()
        self._follower = KvFollower(js, subjects.KEYS_BUCKET, self._on_entry)
        self._on_refused = on_refused
        # One read per key at a time; its answer (absent, mostly) kept for ABSENT_TTL_S.
        self._reads: SharedReads[bool] = SharedReads(self._read, cache_s=ABSENT_TTL_S)
        self._in_flight = 0
        self.found_by_lookup = 0  # keys the watch had not delivered (for tests and logs)

    def __len__(self) -> int:
        return len(self._by_hash)

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._reads.close()  # first: a read ending later would report to the watch
        await self._follower.stop()

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        if key.startswith(RECORD_PREFIX):
            self._apply(key[len(RECORD_PREFIX) :], value, revision)

    def _forget_deleted(self, now: float, digest: str, revision: int) -> None:
        """Remember that ``digest`` was deleted at ``revision``; forget the deletions older
        than :data:`FORGET_DELETED_S` (unless the key came back since)."""
        deleted = self._deleted
        deleted.append((now, digest, revision))
        while deleted and now - deleted[0][0] > FORGET_DELETED_S:
            _, old, at = deleted.popleft()
            if self._revisions.get(old) == at:
                del self._revisions[old]

    def _apply(self, digest: str, value: bytes | None, revision: int) -> None:
        """Keep revision ``revision`` of a key's record (None: deleted) unless a later one is
        kept already (a lookup may have read it before the watch delivered it).

        Raises:
            KEY_READ_ERRORS: the record does not decode (the revision before stays).
        """
        if revision <= self._revisions.get(digest, 0):
            return
        if value is None:
            self._revisions[digest] = revision
            self._forget_deleted(time.monotonic(), digest, revision)
            gone = self._by_hash.pop(digest, None)
            # A retired secret's record, or one of two live records of a key (a rotation that
            # lost its race, from a gateway before it retired that record first): the key lives.
            if gone is not None and not self._release(gone):
                self._refused(gone.id, AuthenticationFailed("This API key has been deleted."))
            return
        record = KEY_DECODER.decode(value)
        self._revisions[digest] = revision
        before = self._by_hash.get(digest)
        if before is not None:
            self._release(before)
        self._by_hash[digest] = record
        if not record.successor:
            self._live[record.id] += 1
        if record.disabled:  # revoked (an expiry needs no write: requests admitted may end)
            self._refused(
                record.id,
                AuthenticationFailed("This API key has been revoked.", code="api_key_revoked"),
            )

    def _release(self, record: ClientKey) -> bool:
        """``record`` no longer holds its key here; True when the key lives on (a retired
        record's, or another live record holds the id)."""
        if record.successor:
            return True
        self._live[record.id] -= 1
        if self._live[record.id] > 0:
            return True
        del self._live[record.id]
        return False

    def _refused(self, key_id: str, error: AuthenticationFailed) -> None:
        if self._on_refused is not None:
            self._on_refused(key_id, error)

    def authenticate(self, api_key: str | None) -> ClientKey:
        """The key record for a presented API key.

        Raises:
            AuthenticationFailed: missing, unknown, disabled or expired key. Messages never
                echo the presented key.
        """
        if not api_key:
            raise missing_key()
        record = self._by_hash.get(hash_key(api_key))
        if record is not None and record.successor:  # an old secret of a rotated key
            record = current_key(record, self._by_hash.get)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        refused = record.refusal()
        if refused is not None:
            raise refused
        return record

    async def look_up(self, api_key: str) -> bool:
        """Read a key :meth:`authenticate` did not know from the bucket's stream leader; True
        when it has a record now (authenticate again for its verdict). False for a key that
        is not ours by its shape, that the leader says is absent (now or within the last
        ``ABSENT_TTL_S``), or when ``MAX_LOOKUPS`` reads are in flight already or
        ``lookups_per_s`` were started in the last second.

        Raises:
            ServiceUnavailable: the bucket cannot be read now (``keys_unavailable``).
        """
        if not api_key.startswith(KEY_PREFIX) or len(api_key) > _MAX_KEY_CHARS:
            return False
        digest = hash_key(api_key)
        if digest in self._by_hash:
            return True  # delivered meanwhile
        try:
            return await self._reads.get(digest)
        except _Unread:  # not kept: the next ask may read
            return False

    async def _read(self, digest: str) -> bool:
        """A new read of ``digest`` (none is under way or answered within ABSENT_TTL_S).

        Raises:
            _Unread: past MAX_LOOKUPS or the per-second allowance.
            ServiceUnavailable: neither the leader nor a replica answers.
        """
        if self._in_flight >= MAX_LOOKUPS or not self._token():
            raise _Unread
        self._in_flight += 1
        try:
            return await self._read_record(digest)
        finally:
            self._in_flight -= 1

    async def _read_record(self, digest: str) -> bool:
        subject = f"$KV.{subjects.KEYS_BUCKET}.{record_name(digest)}"
        try:  # the leader first: a replica that is behind may answer a direct get
            msg = await asyncio.wait_for(
                self._js.get_msg(_STREAM, subject=subject), _LOOKUP_TIMEOUT_S
            )
        except NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError):  # no leader now (a failover): any replica
            try:
                msg = await asyncio.wait_for(
                    self._js.get_msg(_STREAM, subject=subject, direct=True), _LOOKUP_TIMEOUT_S
                )
            except NotFoundError:
                return False
            except (nats.errors.Error, TimeoutError):
                raise ServiceUnavailable(
                    "the client key store is unavailable", code="keys_unavailable"
                ) from None
        deleted = (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE")
        if deleted or not msg.data:
            return False
        revision = int(msg.seq or 0)
        if digest not in self._by_hash and revision <= self._follower.revision:
            # The watch delivered every revision up to its own, this one included, and a later
            # one took the key away (a deletion; its revision may be forgotten by now): a
            # replica behind that deletion must not bring the key back.
            return False
        try:
            self._apply(digest, msg.data, revision)
        except KEY_READ_ERRORS:
            log.warning("a client key record read from the bucket does not decode; refused")
            return False
        if digest not in self._by_hash:
            return False
        if revision > self._follower.revision:
            self.found_by_lookup += 1
            self._follower.behind(revision)
        return True

    def _token(self) -> bool:
        """Take one read from the per-second allowance (many addresses sending unknown keys
        each stay under the per-address guard; together they are bounded here)."""
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._filled_at) * self._rate)
        self._filled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class _Unread(Exception):
    """A lookup refused unread (too many under way or started this second)."""
