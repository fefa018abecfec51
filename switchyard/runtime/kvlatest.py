"""Read the live value of many KV keys at once, leaving nothing behind on the server.

Shared by the Batch API's store and the admin's key list: both list a bucket often, and a
reader left on the server for minutes after each list is a slow leak to an outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from switchyard.errors import BusError

# How long the server keeps a reader's consumer once nobody reads it (a reader that died).
READ_IDLE_S = 120.0
# JetStream's error code when a stream or account has no room for another consumer.
MAX_CONSUMERS = 10026
# A KV entry that records a delete or purge, not a value.
MARKERS = ("DEL", "PURGE")


async def latest(
    js: JetStreamContext,
    kv: KeyValue,
    keys: str,
    deleted: set[str] | None = None,
    revisions: dict[str, int] | None = None,
    *,
    keep_empty: bool = False,
) -> dict[str, bytes]:
    """The live value of every key matching ``keys``, read in one pass: a watch delivers the
    last value of each key in a single stream of messages (one request per key, as
    ``keys()`` then ``get()`` did, took seconds for ten thousand batches). ``deleted``, when
    given, collects the keys whose last entry is a delete or purge marker; ``revisions``
    the revision of each live value. An empty value (a put of no bytes, not a delete) counts
    as none unless ``keep_empty``: a reader that must see every record that is not deleted
    (client keys: one written empty must stay revocable) asks for it.

    The watch's consumer is deleted once read: nats-py's ``stop()`` (and its ``keys()``) only
    unsubscribes, and the server kept each one for the watch's idle limit (5 minutes), so a
    tenant listing its batches a few times a second filled the account's consumer limit and
    every tenant's Batch and Files calls failed until they expired.

    Raises:
        BusError: the server has no room for another reader now (its consumer limit).
    """
    async with readers_limit():
        watcher = await kv.watch(keys, inactive_threshold=READ_IDLE_S)
    out: dict[str, bytes] = {}
    seen = 0
    try:
        async for entry in watcher:
            if entry is None:  # nothing (more) stored under ``keys``...
                if seen or not await entries_on_the_way(watcher):
                    break
                continue  # ...or entries on their way: the last one has delta 0
            seen += 1
            if (entry.value or keep_empty) and entry.operation not in MARKERS:
                out[entry.key] = entry.value or b""
                if revisions is not None:
                    revisions[entry.key] = entry.revision or 0
                if deleted is not None:
                    deleted.discard(entry.key)
            else:
                out.pop(entry.key, None)
                if deleted is not None and entry.operation in MARKERS:
                    deleted.add(entry.key)
            if entry.delta == 0:
                break
    finally:
        # The subscription knows its consumer's current name (an ordered consumer is
        # recreated under a new one after a gap); nats-py has no public way to ask.
        sub = watcher._sub
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
        if sub is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(sub._stream, sub._consumer)
    return out


async def entries_on_the_way(watcher: KeyValue.KeyWatcher) -> bool:
    """Whether the server sent (or holds) watch entries not handed over yet. nats-py marks
    "nothing stored" when the server had nothing left to send and its callback had taken
    nothing yet: on a busy process, entries already sent may still wait for the callback, and
    the read looked empty (a list or a sweep that saw no batches)."""
    sub = watcher._sub
    if sub is None:
        return False
    try:
        info = await sub.consumer_info()
    except (NatsError, TimeoutError):  # cannot tell: what nats-py said stands
        return False
    return bool(info.num_pending or (info.delivered and info.delivered.consumer_seq))


@contextlib.asynccontextmanager
async def readers_limit() -> AsyncIterator[None]:
    """Turn the server's "too many consumers" refusal into :class:`BusError` (the store
    cannot serve this now: a 503 for a client), not an unexpected failure (a 500)."""
    try:
        yield
    except APIError as exc:
        if exc.err_code == MAX_CONSUMERS:
            raise BusError("the store has too many readers now; try again shortly") from exc
        raise
