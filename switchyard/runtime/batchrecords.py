"""Every batch record of ``sy_batches`` in memory, kept live by following the bucket.

The batch runner keeps them to know which batches to run; the admin views list them from here
instead of reading the whole bucket per page (a page that reloads every few seconds while a
batch runs). A record lives under one key (``b.<owner>.<id>``, or ``b.<id>`` before owner
keys); while the runner's sweep moves one, both keys exist for a moment, and the removal of
the old key is not the batch's.

The copy lags the bucket by the watch's delivery: a batch created a moment ago (by another
connection) may not be here yet, so :meth:`BatchRecords.find` reads the bucket itself before
saying there is no such batch.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.errors import ServiceUnavailable
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas import batches as b

log = logging.getLogger("switchyard.batch")

# How long :meth:`BatchRecords.find` reads the bucket for a batch not in memory (then: none).
FIND_S = 2.0
# Retry-After (s) of the 503 when that read failed and the copy has no such batch.
UNREAD_RETRY_S = 2

# Called with the batch id and its record as stored now (None: deleted).
OnChange = Callable[[str, b.BatchRecord | None], None]


class BatchRecords:
    def __init__(self, js: JetStreamContext, on_change: OnChange | None = None) -> None:
        self._records: dict[str, b.BatchRecord] = {}
        self._keys: dict[str, str] = {}  # batch id -> the key its record is under
        self._order: list[tuple[int, str]] = []  # (created_at, id), oldest first
        self._on_change = on_change
        self._js = js
        self._kv: KeyValue | None = None
        # The stream's sequence up to which no batch entry is missing from the copy: the
        # bucket holds other keys too (files, the runner's lease), which the watch skips.
        self._checked = 0
        self._follower = KvFollower(
            js, subjects.BATCHES_BUCKET, self._on_entry, keys=b.BATCH_PREFIX + ">"
        )

    async def start(self, timeout: float = 60.0) -> None:
        """Returns once every record stored now is here."""
        await self._follower.start(timeout=timeout)

    async def stop(self) -> None:
        await self._follower.stop()

    def get(self, batch_id: str) -> b.BatchRecord | None:
        return self._records.get(batch_id)

    async def find(self, batch_id: str, timeout: float = FIND_S) -> b.BatchRecord | None:
        """``batch_id``'s record: from memory, else read from the bucket (a batch created a
        moment ago, its entry not delivered here yet), for at most ``timeout`` seconds. None:
        no such batch.

        Raises:
            ServiceUnavailable: the bucket was not read (a NATS error, or not in ``timeout``)
                and the copy has no such batch: it may exist (a 404 would say it does not).
        """
        found = self._records.get(batch_id)
        if found is not None or not b.is_id(batch_id):
            return found
        try:
            async with asyncio.timeout(timeout):
                stored = await self._read(batch_id)
        except (NatsError, TimeoutError) as exc:
            log.warning(
                "could not read batch %s from its bucket (%s)", batch_id, type(exc).__name__
            )
            found = self._records.get(batch_id)  # (delivered here meanwhile)
            if found is None:
                raise ServiceUnavailable(
                    f"the batches' store did not answer: batch `{batch_id}` could not be "
                    "looked up; try again in a moment",
                    retry_after=UNREAD_RETRY_S,
                ) from None
            return found
        if stored is None:
            return self._records.get(batch_id)  # (delivered here meanwhile, or none)
        record, revision = stored
        self._follower.behind(revision)  # a watch that does not deliver it soon is reopened
        return self._records.get(batch_id) or record

    async def _read(self, batch_id: str) -> tuple[b.BatchRecord, int] | None:
        """The record's live entry in the bucket, if it was written after what the copy
        applied (an entry of it the copy applied would be in the copy).

        One STREAM.INFO says whether anything was written since: usually not (an unknown id:
        nothing more is read). Else one read says whether any batch entry was (the bucket
        also holds files and the runner's lease, renewed every few seconds: before, their
        writes made every lookup read on; now a lookup after only those costs two requests,
        and the next, nothing written meanwhile, one). Else, by sequence from the copy's
        revision, the first entry of the batch under its id alone (written before owner keys),
        then under its owner's key (whatever the owner), each the next message on that subject
        (a direct get, no consumer), and that key's live value: the old layout first, so a
        record the runner's sweep moves in between is read at its new key. Before, every
        unknown id cost a get and a watch's consumer (left on the server for its idle limit
        when the 2 s bound ended the read mid-create)."""
        bucket = subjects.BATCHES_BUCKET
        stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
        applied = self._follower.revision
        last = (await self._js.stream_info(stream)).state.last_seq
        if last <= max(applied, self._checked):
            return None
        try:  # written since: a batch's entry, or only other keys' (the lease, files)?
            await self._js.get_msg(
                stream, seq=applied + 1, subject=prefix + b.BATCH_PREFIX + ">", next=True
            )
        except NotFoundError:
            self._checked = max(self._checked, last)  # none: the next lookup is one request
            return None
        if self._kv is None:
            self._kv = await self._js.key_value(bucket)
        found: tuple[bytes, int] | None = None
        for keys in (b.legacy_key(b.BATCH_PREFIX, batch_id), f"{b.BATCH_PREFIX}*.{batch_id}"):
            try:
                msg = await self._js.get_msg(
                    stream, seq=applied + 1, subject=prefix + keys, next=True
                )
                entry = await self._kv.get((msg.subject or "").removeprefix(prefix))
            except NotFoundError:  # none since, or deleted since (KeyNotFoundError too)
                continue
            if entry.value:
                found = (entry.value, entry.revision or 0)
        if found is None:
            return None
        return b.BATCH_RECORD.decode(found[0]), found[1]

    def values(self) -> list[b.BatchRecord]:
        return list(self._records.values())

    def newest_first(self) -> list[b.BatchRecord]:
        """Every batch, newest first (ties by id, as the Batch API's lists)."""
        return [self._records[batch_id] for _, batch_id in reversed(self._order)]

    def note(self, record: b.BatchRecord) -> None:
        """A record this process just wrote (seen here before the bucket echoes it)."""
        if record.batch.id in self._records:
            self._records[record.batch.id] = record

    def drop(self, batch_id: str) -> None:
        """A record this process just removed."""
        self._remove(batch_id)

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        batch_id = b.id_of(key)
        if value is None:
            if self._keys.get(batch_id) == key:  # not the old key of a moved record
                self._remove(batch_id)
                if self._on_change is not None:
                    self._on_change(batch_id, None)
            return
        record = b.BATCH_RECORD.decode(value)
        old = self._records.get(batch_id)
        if old is not None and old.batch.created_at != record.batch.created_at:
            self._remove(batch_id)
            old = None
        if old is None:
            bisect.insort(self._order, (record.batch.created_at, batch_id))
        self._records[batch_id] = record
        self._keys[batch_id] = key
        if self._on_change is not None:
            self._on_change(batch_id, record)

    def _remove(self, batch_id: str) -> None:
        record = self._records.pop(batch_id, None)
        self._keys.pop(batch_id, None)
        if record is not None:
            spot = (record.batch.created_at, batch_id)
            where = bisect.bisect_left(self._order, spot)
            if where < len(self._order) and self._order[where] == spot:
                del self._order[where]
