"""The output items of translated Responses answers, kept for later ``item_reference``s.

A client that stores its answers (``store`` not false, OpenAI's default) may send earlier
output items back by id instead of their content (the Vercel AI SDK does from a
conversation's second turn). A model-proxy serving such an answer on a translating deployment
keeps its message and function call items in the CORE bucket ``sy_response_items`` (bounded by
``streams.response_items_max_bytes``, the oldest going first, and kept
``streams.response_items_max_age_s``: 30 days, as OpenAI keeps them), and fills the references
of a later request in from there before translating it.

Items are the tenant's (a key's team, else the key, as fair queueing counts them; ``internal``
for callers without a key; each written with its kind, so a team named like a key id is not
that key): each is stored under a digest of its tenant and its id, so a reference is only ever
read from its own tenant's items. Another tenant's id, one never
stored, expired or pushed out reads as missing: OpenAI's 404 naming the id, the request never
forwarded. An unreadable bucket is a 503 (``items_unavailable``).

Keeping items never delays or fails an answer: the writes run in a bounded background task
started as the answer goes back; one that fails is logged (at most every 10 s) and counted
(``switchyard_response_items_total{result="failed"}``). A reference the first read misses is
read once more after this process's own writes for the same tenant, or else a short pause
(a client may continue the moment it has its answer, while the write is still on its way).
A native deployment's request gets the references this store holds filled in, and the others
passed on as they are, at once (they may be its provider's own: OpenAI keeps the items of
answers it made).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.dialects.responses import references
from switchyard.errors import BusError, ServiceUnavailable
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.scheduling import fair_tenant
from switchyard.workers.modelproxy.providers.base import ProviderCall

log = logging.getLogger("switchyard.modelproxy.response_items")

INTERNAL = "internal"  # the tenant of callers without a client key
MAX_PENDING = 512  # answers whose items are being written at once; beyond, one is not kept
WRITE_S = 5.0  # the longest one answer's writes may take
READ_S = 2.0  # the longest the reads of one request may take
AGAIN_S = 0.05  # the pause before a missed reference is read again (no write seen here)
DOWN_S = 10.0  # after a failed read, the bucket counts as unreadable this long
_READS_AT_ONCE = 64


def tenant_of(team: str, key_id: str) -> str:
    """Whose items a request may read and write: the team, else the key, else ``internal``,
    each with its kind (a team may be named anything, a key id's text included)."""
    if team:
        return f"team:{team}"
    return f"key:{key_id}" if fair_tenant(team, key_id) else INTERNAL


def item_key(tenant: str, item_id: str) -> str:
    """The bucket key of ``tenant``'s item ``item_id`` (the tenant as a digest: any text)."""
    return f"t{hashlib.sha256(tenant.encode()).hexdigest()[:32]}.{item_id}"


class ResponseItems:
    """The ``sy_response_items`` bucket, opened on first use."""

    def __init__(
        self, nc: NATS, *, bucket: str = subjects.RESPONSE_ITEMS_BUCKET, enabled: bool = True
    ) -> None:
        # ``modelproxy.keep_response_items``: False keeps and reads nothing (the Response
        # echoes ``store: false``; a translating deployment answers references 404).
        self.enabled = enabled
        self._js = nc.jetstream(timeout=READ_S)
        self._bucket = bucket
        self._kv: KeyValue | None = None
        self._pending: dict[str, set[asyncio.Task[None]]] = {}  # by tenant
        self._warn = Throttle(10.0)
        self._warn_read = Throttle(10.0)
        self._down_until = 0.0
        self.stored = 0  # items written
        self.failed = 0  # items that could not be written (or were not, under load)

    async def _store(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self._bucket)
        return self._kv

    async def resolve(
        self, call: ProviderCall, tenant: str, *, pass_unknown: bool = False
    ) -> ProviderCall:
        """``call`` with its ``item_reference`` input items replaced by ``tenant``'s items;
        ``pass_unknown`` (a native deployment): the ones not stored here stay references.

        Raises:
            NotFound: a referenced item is not ``tenant``'s, or not (or no longer) stored.
            InvalidRequest: a reference is malformed.
            ServiceUnavailable: the bucket cannot be read (the request is not forwarded).
        """
        ids = references.referenced(call.body)
        if not ids or (pass_unknown and not self.enabled):
            return call
        if not self.enabled:
            raise references.item_not_found(ids[0])
        try:
            found = await self._read(ids, tenant)
            missing = [i for i in ids if i not in found]
            writing = self._pending.get(tenant)
            if missing and (writing or not pass_unknown):
                if writing:  # this tenant's items still on their way from this process
                    await asyncio.wait(set(writing), timeout=READ_S)
                else:  # perhaps from another model-proxy, a moment behind its answer
                    await asyncio.sleep(AGAIN_S)
                found.update(await self._read(missing, tenant))
        except ServiceUnavailable:
            if pass_unknown:  # the provider may hold them all: its answer says
                return call
            raise
        for item_id in ids:
            if item_id not in found and not pass_unknown:
                raise references.item_not_found(item_id)
        if not found:
            return call
        return dataclasses.replace(call, body=references.resolved(call.body, found))

    async def _read(self, ids: list[str], tenant: str) -> dict[str, dict[str, Any]]:
        """``tenant``'s items of ``ids`` that are kept. After a failure the bucket counts as
        unreadable for ``DOWN_S`` (no read tried: a missing permission costs each read its
        whole timeout), and it is logged at most every 10 s."""
        if time.monotonic() < self._down_until:
            raise _unavailable()
        found: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(READ_S):
                kv = await self._store()
                for start in range(0, len(ids), _READS_AT_ONCE):
                    part = ids[start : start + _READS_AT_ONCE]
                    got = await asyncio.gather(*(_get(kv, tenant, i) for i in part))
                    found.update((i, item) for i, item in zip(part, got, strict=True) if item)
        except BucketNotFoundError:
            self._down("no bucket: run `switchyard provision`")
            raise _unavailable() from None
        except (TimeoutError, NatsError, BusError) as exc:
            self._down(type(exc).__name__)
            raise _unavailable() from None
        return found

    def _down(self, why: str) -> None:
        self._down_until = time.monotonic() + DOWN_S
        if self._warn_read.ready():
            log.warning(
                "could not read stored response items (%s): references on translating "
                "deployments are answered 503, on native ones passed on, for %g s",
                why,
                DOWN_S,
            )

    def keep(self, output: list[dict[str, Any]], tenant: str) -> None:
        """Store the referenceable items of an answer's ``output``, in the background."""
        items = references.kept_items(output)
        if not items or not self.enabled:
            return
        if sum(len(tasks) for tasks in self._pending.values()) >= MAX_PENDING:
            self._failed(len(items), "too many being written")
            return
        task = asyncio.create_task(self._write(items, tenant))
        writing = self._pending.setdefault(tenant, set())
        writing.add(task)

        def done(task: asyncio.Task[None]) -> None:
            writing.discard(task)
            if not writing and self._pending.get(tenant) is writing:
                del self._pending[tenant]

        task.add_done_callback(done)

    async def _write(self, items: list[dict[str, Any]], tenant: str) -> None:
        done = 0
        try:
            async with asyncio.timeout(WRITE_S):
                kv = await self._store()
                for item in items:
                    await kv.put(item_key(tenant, item["id"]), msgspec.json.encode(item))
                    done += 1
                    self.stored += 1
        except Exception as exc:  # noqa: BLE001 - a background write: logged, never raised
            self._failed(len(items) - done, type(exc).__name__)

    def _failed(self, count: int, why: str) -> None:
        self.failed += count
        if self._warn.ready():
            log.warning(
                "could not store a response's output items (%s): a later item_reference to "
                "them is answered 404",
                why,
            )

    async def close(self, timeout: float = WRITE_S) -> None:
        """Let the writes in flight finish (within ``timeout``)."""
        tasks = {task for writing in self._pending.values() for task in writing}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


async def _get(kv: KeyValue, tenant: str, item_id: str) -> dict[str, Any] | None:
    """``tenant``'s item ``item_id``, or None (not stored, or not an item)."""
    if references.ITEM_ID.fullmatch(item_id) is None:
        return None
    try:
        entry = await kv.get(item_key(tenant, item_id))
    except KeyNotFoundError:
        return None
    try:
        item = msgspec.json.decode(entry.value or b"")
    except msgspec.DecodeError:
        return None
    if not isinstance(item, dict) or item.get("id") != item_id:
        return None
    return item


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "could not read the stored items this request references; retry the request",
        code="items_unavailable",
    )
