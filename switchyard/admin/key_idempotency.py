"""``Idempotency-Key`` on ``POST /admin/v1/keys``: a create sent again is answered, not done again.

A CI job that retried a create after a timeout made a second key (the first had been made;
only its answer was lost). With the header, the first request reserves the value (a NATS KV
create, so two replicas never both win) with the key id it is about to write, and stores its
answer once the key exists; the same value with the same body within a day
(:data:`~switchyard.runtime.definitions.ADMIN_IDEMPOTENCY_TTL_S`, the bucket's TTL) gets that
answer back, the same body under another value is a new key, and another body under the same
value is a 409 (``idempotency_key_reused``): a caller's bug, never guessed at.

The secret is not in the replay. It is shown once, and keeping it to show again would keep a
plaintext (or a decryptable) client key in a bucket every gateway's admin identity reads for
a day. The replay (``Idempotent-Replayed: true``) has the key's record as first answered,
``"key": null``, ``"idempotent_replay": true`` and ``key_note`` saying the secret was in the
first answer only; a caller that lost it rotates the key
(``POST /admin/v1/keys/{id}/rotate``: same id and settings, a new secret). Only digests
of the header's value and of the body are stored (the body's fields sorted, so key order
and spacing do not make two retries differ).

A reservation whose key is not written yet is a create still in progress: the same value then
gets a 409 ``idempotency_key_in_use`` (try again in a moment). One left by a gateway that
died before writing the key is taken over after :data:`PENDING_S`; one whose key was written
but whose answer was not stored is answered from the key.

A takeover keeps the reserved key id, and whoever writes that key first takes the id
(:meth:`IdempotentCreates.writing`, a KV create of ``w.<key id>``, just before the key's own
write): a gateway that stalled longer than :data:`PENDING_S` and then resumes finds the id
taken and writes nothing, so one value never makes two keys (before, the takeover chose a new
id and both wrote theirs). A ``w.`` entry left by a key write that failed (a NATS timeout, a
leader change: a 500) is taken over the same way once it is :data:`PENDING_S` old and its key
was not made (before, the id stayed taken and every retry was a 409 for a day). Ages are by
the NATS server's clock alone: the time it stored the entry against the time it stores on a
probe write (``t.``), never a gateway's clock (one running a minute ahead took creates still
in progress over, one running behind waited too long).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import (
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from starlette.datastructures import Headers

from switchyard.bus import subjects
from switchyard.errors import Conflict, InvalidRequest, ServiceUnavailable
from switchyard.schemas.keys import new_key_id

log = logging.getLogger("switchyard.admin")

HEADER = "Idempotency-Key"
MAX_CHARS = 255  # as is common (Stripe's); a UUID is 36
# A reservation older than this whose key was never written: its create died; taken over.
PENDING_S = 60.0
CLAIM_ATTEMPTS = 3
# How long the bucket's lookup may take (a refused one, under the NATS config of an older
# version, looks like a timeout: nats-py waits its JetStream timeout, 10 s, before), and how
# long a refusal is remembered (each create then refused at once, not after LOOKUP_S again):
# one the server said (a permissions violation on a connection that stayed up) REFUSED_S, a
# lookup that only went unanswered (a NATS outage, a JetStream leader election) LOOKUP_S.
LOOKUP_S = 2.0
REFUSED_S = 15.0
# What to do instead when the bucket is refused (it is not in the config rendered before the
# upgrade); every caller's refusal says it.
RENDER = (
    "render the NATS config of this version, reload nats-server, then run `switchyard provision`"
)


class Caller(msgspec.Struct, frozen=True):
    """Who sent a create's idempotency value, in that caller's words: the value's name
    (``value``, e.g. "the Idempotency-Key header"), the ``param`` errors name, and how to
    create without it (``instead``, "" when there is no such way)."""

    value: str
    param: str | None = None
    instead: str = ""


API = Caller(f"the {HEADER} header", HEADER, "or send the create without the header")


class Remembered(msgspec.Struct, forbid_unknown_fields=False):
    """One header value's entry: the body's digest, the key id reserved, and, once the key
    is made, the first answer without its secret (``answer``). ``at`` is the writer's clock,
    kept for people reading the bucket; the age that counts is the entry's stored time."""

    body: str
    key_id: str
    at: float
    answer: dict[str, Any] | None = None


_DECODE = msgspec.json.Decoder(Remembered)


class Claim(msgspec.Struct):
    """A reservation won: make key ``key_id``, then :meth:`IdempotentCreates.answered`
    (``made``: the key exists already, its answer was not stored: answer from the key)."""

    entry: str
    revision: int
    held: Remembered
    made: bool = False
    caller: Caller = API

    @property
    def key_id(self) -> str:
        return self.held.key_id


class Replay(msgspec.Struct):
    """The first answer to send back (its secret left out)."""

    answer: dict[str, Any]


def idempotency_key(headers: Headers) -> str | None:
    """The request's ``Idempotency-Key`` (None: it has none).

    Raises:
        InvalidRequest: given empty, longer than :data:`MAX_CHARS`, or with characters other
            than printable ASCII (a 400 naming the header).
    """
    value = headers.get(HEADER)
    if value is None:
        return None
    if not valid_value(value):
        raise InvalidRequest(
            f"the {HEADER} header must be 1 to {MAX_CHARS} printable ASCII characters without "
            "spaces (a UUID is usual)",
            param=HEADER,
            code="invalid_header",
        )
    return value


def valid_value(value: str) -> bool:
    """1 to :data:`MAX_CHARS` printable ASCII characters, no spaces (the header's rule, and
    ``switchyard keys create --idempotency-key``'s)."""
    return 0 < len(value) <= MAX_CHARS and all(" " < c <= "~" for c in value)


def body_digest(doc: dict[str, Any]) -> str:
    """A digest of a create's fields, the same whatever their order or spacing was."""
    encoded = msgspec.json.encode(msgspec.to_builtins(doc), order="sorted")
    return hashlib.sha256(encoded).hexdigest()


class IdempotentCreates:
    """The ``sy_admin_idempotency`` bucket, shared by every gateway replica."""

    def __init__(
        self, js: JetStreamContext, *, pending_s: float = PENDING_S, nc: NATS | None = None
    ) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        self._pending_s = pending_s
        self._nc = nc  # ``js``'s connection: no key write while it is down (:meth:`writing`)
        # Until when a failed lookup is answered at once, and how (_REFUSED, _UNANSWERED).
        self._refused: tuple[float, str] | None = None

    async def _bucket(self, caller: Caller) -> KeyValue:
        """The bucket, looked up once, said in ``caller``'s words when it fails: missing
        (answered at once, so not remembered), refused by the NATS config (remembered
        :data:`REFUSED_S`), or not answered within :data:`LOOKUP_S` (remembered that long).

        Raises:
            ServiceUnavailable: the bucket is missing, refused, or did not answer."""
        if self._kv is not None:
            return self._kv
        if self._refused is not None and time.monotonic() < self._refused[0]:
            raise _refusal(caller, self._refused[1])
        seen = self._connection()
        try:
            async with asyncio.timeout(LOOKUP_S):
                self._kv = await self._js.key_value(subjects.ADMIN_IDEMPOTENCY_BUCKET)
        except BucketNotFoundError:
            self._refused = None
            raise _refusal(caller, _MISSING) from None
        except TimeoutError:
            # The NATS config of an older version refuses the admin identity this bucket,
            # which nats-py reports as a timeout (as it would a server that is slow); the
            # server's permissions violation, on a connection that stayed up, tells them apart.
            how, remember = (
                (_REFUSED, REFUSED_S) if self._refused_since(seen) else (_UNANSWERED, LOOKUP_S)
            )
            log.warning(
                "the %s bucket did not answer within %.0f s (%s); refusing idempotent key "
                "creates for %.0f s",
                subjects.ADMIN_IDEMPOTENCY_BUCKET,
                LOOKUP_S,
                f"refused by the NATS config: {RENDER}" if how == _REFUSED else _OUTAGE,
                remember,
            )
            self._refused = (time.monotonic() + remember, how)
            raise _refusal(caller, how) from None
        self._refused = None
        return self._kv

    def _connection(self) -> tuple[Exception | None, int] | None:
        """The connection's last error and reconnect count (None: no connection known)."""
        if self._nc is None:
            return None
        return self._nc.last_error, int(self._nc.stats["reconnects"])

    def _refused_since(self, seen: tuple[Exception | None, int] | None) -> bool:
        """Whether, since ``seen`` (:meth:`_connection`), the server refused this connection
        the bucket (a permissions violation naming its stream) and the connection stayed up:
        then the lookup's timeout was that refusal, not an outage."""
        now = self._connection()
        if seen is None or now is None or self._nc is None or not self._nc.is_connected:
            return False
        error, reconnects = now
        said = str(error).lower()  # (the server's text comes lowercased)
        return (
            reconnects == seen[1]
            and error is not None
            and error is not seen[0]
            and "permissions violation" in said
            and f"kv_{subjects.ADMIN_IDEMPOTENCY_BUCKET}".lower() in said
        )

    async def claim(
        self,
        value: str,
        body: str,
        made: Callable[[str], Awaitable[bool]],
        caller: Caller = API,
    ) -> Claim | Replay:
        """Reserve ``value`` for a create of ``body`` (a :func:`body_digest`), or the answer
        to send back. ``made(key_id)`` says whether that key exists now (a reservation not
        answered: its create may have landed). Errors name the value as ``caller`` does.

        Raises:
            Conflict: another body under ``value`` (``idempotency_key_reused``), or its first
                create still in progress (``idempotency_key_in_use``).
            ServiceUnavailable: the bucket is missing or refused (:meth:`_bucket`).
        """
        kv = await self._bucket(caller)
        entry = "c." + hashlib.sha256(value.encode()).hexdigest()
        for _ in range(CLAIM_ATTEMPTS):
            fresh = Remembered(body=body, key_id=new_key_id(), at=time.time())
            try:
                revision = await kv.create(entry, msgspec.json.encode(fresh))
                return Claim(entry, revision, fresh, caller=caller)
            except KeyWrongLastSequenceError:
                pass
            found = await self._stored(entry)
            if found is None:  # released (its create failed) or expired meanwhile
                continue
            held, revision, stored = found
            if held.body != body:
                raise Conflict(
                    f"this {HEADER} was used with another body in the last day: a retry sends "
                    "the same body; a new key needs a new value",
                    code="idempotency_key_reused",
                    param=HEADER,
                    no_retry=True,  # (SDKs retry a 409; this one never succeeds)
                )
            if held.answer is not None:
                return Replay(held.answer)
            if await made(held.key_id):  # made, its answer not stored: answered from the key
                return Claim(entry, revision, held, made=True, caller=caller)
            if await self._now(kv, entry) - stored < self._pending_s:
                raise Conflict(
                    f"a create with this {HEADER} is still in progress; try again in a moment",
                    code="idempotency_key_in_use",
                    param=HEADER,
                    retry_after=1,
                )
            # A create that died (or stalls) before writing its key: this one takes its place,
            # with the same key id, so the two can never both write a key (:meth:`writing`).
            # Rewritten, so its stored time is now: a third waits PENDING_S again.
            again = msgspec.structs.replace(held, at=time.time())
            try:
                revision = await kv.update(entry, msgspec.json.encode(again), last=revision)
                return Claim(entry, revision, again, caller=caller)
            except KeyWrongLastSequenceError:
                continue
        raise Conflict(
            f"this {HEADER} is changing too fast; try again",
            code="idempotency_key_in_use",
            param=HEADER,
        )

    async def _stored(self, entry: str) -> tuple[Remembered, int, float] | None:
        """The entry, its revision and when NATS stored it (None: none, or deleted)."""
        msg = await self._last(entry)
        if msg is None:
            return None
        return _DECODE.decode(msg.data or b"{}"), msg.seq or 0, _stored_at(msg)

    async def _last(self, entry: str) -> RawStreamMsg | None:
        """The entry's last message (None: none, or deleted)."""
        bucket = subjects.ADMIN_IDEMPOTENCY_BUCKET
        try:
            msg = await self._js.get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{entry}")
        except NotFoundError:
            return None
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return msg

    async def _now(self, kv: KeyValue, entry: str) -> float:
        """The NATS server's now: the time it stores on a probe write (``t.`` and the
        entry's digest). An entry's age is the server's now less its stored time, both by
        one clock: a gateway whose clock runs ahead must not take a create in progress over
        (nor one running behind wait long past :data:`PENDING_S`).

        Read back as the probe's last message, not by the put's revision: the bucket keeps
        one version a key, so a retry racing this one removes this probe's message (a
        NotFoundError, a 500, before); its own, stored later, is as good a now."""
        probe = "t." + entry.partition(".")[2]
        bucket = subjects.ADMIN_IDEMPOTENCY_BUCKET
        await kv.put(probe, b"")
        return _stored_at(await self._js.get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{probe}"))

    async def writing(self, claim: Claim, made: Callable[[str], Awaitable[bool]]) -> bool:
        """Take ``claim``'s key id for the key's write, just before it (False: another
        gateway took it, after taking a stalled create over, or the stalled one resumed after
        the takeover: that one writes the key, this one must not).

        A ``w.`` entry older than :data:`PENDING_S` whose key was not made (``made``) is
        a write that failed (a NATS timeout, a leader change: the caller got a 500): taken
        over, by a compare-and-set on its revision so only one takes it. Kept, it refused
        every retry of the value for a day (409 ``idempotency_key_in_use``).

        Raises:
            ServiceUnavailable: the connection to NATS is down, before or once the id is
                taken (:meth:`_connected`)."""
        self._connected(claim.caller)
        kv = await self._bucket(claim.caller)
        name = "w." + claim.key_id
        try:
            await kv.create(name, claim.entry.encode())
        except KeyWrongLastSequenceError:
            pass
        else:
            return self._connected(claim.caller)
        held = await self._last(name)
        if held is None:  # expired meanwhile: a retry takes it anew
            return False
        if await self._now(kv, claim.entry) - _stored_at(held) < self._pending_s:
            return False  # another gateway is writing it
        if await made(claim.key_id):
            return False
        return await self._take(kv, name, claim, held.seq or 0) and self._connected(claim.caller)

    def _connected(self, caller: Caller) -> bool:
        """True, or a 503 while the connection is down (reconnecting): nats-py would keep
        the key's write in its reconnect buffer and send it once reconnected, maybe long after
        this create's caller got an error, retried, and another gateway took its reservation
        over and wrote a second key for the value. (A connection that drops during the write
        itself still leaves that window; its takeover waits :data:`PENDING_S`.)"""
        if self._nc is not None and not self._nc.is_connected:
            raise ServiceUnavailable(
                "the connection to NATS is down: the key was not written; send it again with "
                f"the same value of {caller.value} in a moment (it may say a create with it is "
                "still in progress for up to a minute; it makes at most one key)",
                code="service_unavailable",
                retry_after=5,
            )
        return True

    @staticmethod
    async def _take(kv: KeyValue, name: str, claim: Claim, revision: int) -> bool:
        try:
            await kv.update(name, claim.entry.encode(), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    def writer(
        self, claim: Claim, made: Callable[[str], Awaitable[bool]]
    ) -> Callable[[], Awaitable[bool]]:
        """:meth:`writing` for ``claim``, for the key's write to call."""
        return lambda: self.writing(claim, made)

    async def answered(self, claim: Claim, answer: dict[str, Any]) -> None:
        """Store the answer to ``claim``'s create (``answer`` holds no secret)."""
        done = msgspec.structs.replace(claim.held, answer=answer)
        kv = await self._bucket(claim.caller)
        await kv.update(claim.entry, msgspec.json.encode(done), last=claim.revision)

    async def release(self, claim: Claim) -> None:
        """Forget a reservation whose create failed: the same value may be sent again."""
        kv = await self._bucket(claim.caller)
        await kv.delete(claim.entry, last=claim.revision)


# How the bucket's lookup failed (:func:`_refusal`).
_MISSING, _REFUSED, _UNANSWERED = "missing", "refused", "unanswered"
_OUTAGE = "a NATS outage, or the NATS config of this version is not rendered yet"


def _refusal(caller: Caller, how: str) -> ServiceUnavailable:
    """The bucket's refusal (``how``: ``_MISSING``, ``_REFUSED``, ``_UNANSWERED``) in
    ``caller``'s words, and what to do instead."""
    bucket = subjects.ADMIN_IDEMPOTENCY_BUCKET
    instead = f" ({caller.instead})" if caller.instead else ""
    retry_after = REFUSED_S
    if how == _MISSING:
        said = f"{caller.value} needs the {bucket} bucket: run `switchyard provision`{instead}"
    elif how == _REFUSED:
        said = (
            f"{caller.value} needs the {bucket} bucket, which the NATS config refuses the "
            f"gateway (not rendered again since the upgrade): {RENDER}{instead}"
        )
    else:
        said = (
            f"{caller.value} needs the {bucket} bucket, which did not answer ({_OUTAGE}: then "
            f"{RENDER}); try again in a moment{instead}"
        )
        retry_after = LOOKUP_S
    return ServiceUnavailable(said, code="service_unavailable", retry_after=int(retry_after))


def _stored_at(msg: RawStreamMsg) -> float:
    """When NATS stored ``msg`` (by the server's clock)."""
    return msg.time.timestamp() if isinstance(msg.time, datetime) else 0.0
