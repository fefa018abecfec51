"""Which client key created each stored Responses answer: only that key may continue it.

Every native Responses deployment (kind ``openai``) reaches OpenAI with the provider's key, so
every tenant's stored responses live in one OpenAI organisation, and OpenAI continues whichever
``previous_response_id`` it is given: a tenant holding another's response id could continue,
and so read, that conversation. So a model-proxy remembers, for each native Responses answer it
passes on, the client key that asked for it, in the CORE bucket ``sy_response_owners`` (as long
as OpenAI keeps a stored response: 30 days); and a request naming a ``previous_response_id`` is
forwarded only when that id is its own key's.

An answer is recorded under its response id, as every version since 0.2.0 reads it: the value
is the hash of the secret that asked (``internal`` for callers without one), and the record
carries the key's id as well, in a header (``Sy-Key-Id``) that older model-proxies ignore. The
id is the head's, stamped after it checked the secret: no caller can claim another key's. A
model-proxy of this version reads the id first, so a key whose secret is rotated keeps its
conversations; an older one (during a rolling upgrade, or after a rollback) compares the value
with the secret's hash as it always did, so the secret that made an answer continues it on
either. A record without the header (written by an older model-proxy) is read by its value:
its secret's, not a rotated one's. Another key's id, or one never seen here, is answered 404 as
OpenAI answers an unknown id, and never forwarded.

Only native Responses requests pay: one bucket write per answer that is stored (``store`` not
false), and one read per request carrying the field. A streamed answer's write is made after
its first event went on its way (a bounded task of its own, logged when it fails), long before
the stream ends; a whole answer's before it goes back (its caller may continue at once). A
continuation whose answer's write failed is refused like an unknown id. Internal callers (no
client key) share one owner, ``internal``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.errors import BusError, InvalidRequest, NotFound, ServiceUnavailable
from switchyard.runtime.throttle import Throttle
from switchyard.workers.modelproxy.providers.base import (
    Adapter,
    Completion,
    ProviderCall,
    StreamEvent,
)

log = logging.getLogger("switchyard.modelproxy.response_owners")

FIELD = "previous_response_id"
INTERNAL = "internal"  # the owner of what callers without a client key create
KEY_ID = "Sy-Key-Id"  # the record's header naming the key's id (older readers ignore it)
_LEGACY_ID = b"id:"  # how builds between 0.3.0 and this one recorded a key id, as the value
_GONE = frozenset({"DEL", "PURGE"})  # a KV-Operation header: the key was removed
MAX_PENDING = 512  # owner writes in flight at once; beyond, one is dropped (and logged)
WRITE_S = 5.0  # the longest one write may take
READ_S = 2.0  # the longest the lookup may take
# OpenAI's ids are ``resp_`` and letters and digits; what a bucket key may hold, bounded.
_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_SCANNED = 4  # streamed events read for the id: ``response.created`` is the first


class _Response(msgspec.Struct):
    id: Any = None


class _Event(msgspec.Struct):
    response: _Response | None = None


_ANSWER = msgspec.json.Decoder(_Response)
_EVENT = msgspec.json.Decoder(_Event)


def _owner(key_hash: str) -> bytes:
    """The record's value: the hash of the secret that asked (``internal`` without one), as
    every older model-proxy compares it with the hash of the secret continuing."""
    return (key_hash or INTERNAL).encode()


def _headers(key_id: str) -> dict[str, str] | None:
    """The record's headers: the key's id, which stays the same across rotations."""
    return {KEY_ID: key_id} if key_id else None


def _owned_by(value: bytes | None, bound: str | None, key_id: str, key_hash: str) -> bool:
    """True if a record (its ``value``, and the key id it is ``bound`` to, if any) is the
    caller's. The key id decides when the record has one: the key's own, whichever of its
    secrets; a record without (written by an older model-proxy) is its secret's."""
    if bound is not None:
        return bool(key_id) and bound == key_id
    if value is not None and value.startswith(_LEGACY_ID):
        return bool(key_id) and value == _LEGACY_ID + key_id.encode()
    return value == _owner(key_hash)


class ResponseOwners:
    """The ``sy_response_owners`` bucket, opened on first use."""

    def __init__(self, nc: NATS, *, bucket: str = subjects.RESPONSE_OWNERS_BUCKET) -> None:
        self._js = nc.jetstream(timeout=READ_S)
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._kv: KeyValue | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._warn = Throttle(10.0)

    async def _store(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self._bucket)
        return self._kv

    async def check(self, response_id: object, key_id: str, key_hash: str) -> None:
        """Pass when key ``key_id`` (presenting the secret hashed ``key_hash``) created
        ``response_id``.

        Raises:
            NotFound: another key's id, or one not known here (OpenAI's answer to an unknown
                id: the id's existence is not revealed).
            InvalidRequest: the id is not a string.
            ServiceUnavailable: the bucket cannot be read (the request is not forwarded).
        """
        if not isinstance(response_id, str):
            raise InvalidRequest(f"{FIELD} must be a string", param=FIELD)
        if _ID.fullmatch(response_id) is None:
            raise _not_found(response_id)
        try:
            async with asyncio.timeout(READ_S):
                await self._store()  # the bucket is there (and the warning below if not)
                msg = await self._js.get_msg(
                    self._stream, subject=self._prefix + response_id, direct=True
                )
        except BucketNotFoundError:  # (a NotFoundError too: caught first)
            log.warning("no %s bucket (run `switchyard provision`)", self._bucket)
            raise _unavailable() from None
        except NotFoundError:  # no record of this id
            raise _not_found(response_id) from None
        except (TimeoutError, NatsError, BusError) as exc:
            log.warning("could not read the owner of a previous response: %s", type(exc).__name__)
            raise _unavailable() from None
        headers = msg.headers or {}
        if headers.get("KV-Operation") in _GONE:
            raise _not_found(response_id)
        if not _owned_by(msg.data, headers.get(KEY_ID), key_id, key_hash):
            raise _not_found(response_id)

    def record(self, response_id: object, key_id: str, key_hash: str) -> None:
        """Remember that key ``key_id`` created ``response_id``, in the background."""
        if not isinstance(response_id, str) or _ID.fullmatch(response_id) is None:
            return
        if len(self._pending) >= MAX_PENDING:
            if self._warn.ready():
                log.warning("too many response owners being written; one was not recorded")
            return
        task = asyncio.create_task(self._write(response_id, key_id, key_hash))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def record_now(self, response_id: object, key_id: str, key_hash: str) -> None:
        """:meth:`record`, waited for (an answer not streamed: its caller may continue as soon
        as it has it); a failure is logged, never raised."""
        if isinstance(response_id, str) and _ID.fullmatch(response_id) is not None:
            await self._write(response_id, key_id, key_hash)

    async def _write(self, response_id: str, key_id: str, key_hash: str) -> None:
        # A plain KV put, with the key's id in a header: one record, read by every version.
        try:
            async with asyncio.timeout(WRITE_S):
                await self._store()
                await self._js.publish(
                    self._prefix + response_id, _owner(key_hash), headers=_headers(key_id)
                )
        except Exception as exc:  # noqa: BLE001 - a background write: logged, never raised
            if self._warn.ready():
                log.warning(
                    "could not record who created a response (%s): its continuation will be "
                    "refused",
                    type(exc).__name__,
                )

    async def close(self, timeout: float = WRITE_S) -> None:
        """Let the writes in flight finish (within ``timeout``)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)


def _not_found(response_id: str) -> NotFound:
    shown = response_id if len(response_id) <= 256 else f"{response_id[:256]}..."
    return NotFound(
        f"Previous response with id '{shown}' not found.",
        code="previous_response_not_found",
        param=FIELD,
    )


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "could not check who created the previous response; retry the request",
        code="response_owners_unavailable",
    )


class Owned:
    """A native Responses adapter whose continuations are checked and answers recorded."""

    def __init__(self, inner: Adapter, owners: ResponseOwners, key_id: str, key_hash: str) -> None:
        self._inner = inner
        self._owners = owners
        self._key_id = key_id
        self._key_hash = key_hash

    async def _check(self, call: ProviderCall) -> None:
        previous = call.body.get(FIELD)
        if previous is not None:
            await self._owners.check(previous, self._key_id, self._key_hash)

    def _recorded(self, call: ProviderCall) -> bool:
        # A token count answers no response; an answer not stored cannot be continued.
        return call.op == "responses" and call.body.get("store") is not False

    async def complete(self, call: ProviderCall) -> Completion:
        await self._check(call)
        done = await self._inner.complete(call)
        if self._recorded(call):
            try:
                found = _ANSWER.decode(done.body).id
            except msgspec.DecodeError:
                found = None
            # Written before the answer goes back: its caller may continue at once.
            await self._owners.record_now(found, self._key_id, self._key_hash)
        return done

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        await self._check(call)
        left = _SCANNED if self._recorded(call) else 0
        async for event in self._inner.stream(call):
            found = None
            if left and event.payload is not None:
                left -= 1
                found = _streamed_id(event.payload)
                if found is not None:
                    left = 0
            yield event
            if found is not None:  # after the event went on its way
                self._owners.record(found, self._key_id, self._key_hash)

    async def close(self) -> None:
        """The inner adapter belongs to the registry, which closes it."""


def _streamed_id(frame: bytes) -> str | None:
    """The ``response.id`` of one SSE event (``response.created`` carries it), if any."""
    for line in frame.splitlines():
        if line.startswith(b"data:"):
            try:
                event = _EVENT.decode(line[5:])
            except msgspec.DecodeError:
                return None
            rid = event.response.id if event.response is not None else None
            return rid if isinstance(rid, str) else None
    return None


def refuse_unbound(call: ProviderCall) -> None:
    """Without an owner store, a continuation cannot be checked: it is refused.

    Raises:
        InvalidRequest: the request names a previous response.
    """
    if call.body.get(FIELD) is not None:
        raise InvalidRequest(
            f"{FIELD} is not available on this deployment (its owner cannot be checked)",
            param=FIELD,
        )
