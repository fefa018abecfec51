"""Every batch record of ``sy_batches`` in memory, kept live by following the bucket.

The batch runner keeps them to know which batches to run; the admin views list them from here
instead of reading the whole bucket per page (a page that reloads every few seconds while a
batch runs). A record lives under one key (``b.<owner>.<id>``, or ``b.<id>`` before owner
keys); while the runner's sweep moves one, both keys exist for a moment, and the removal of
the old key is not the batch's.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas import batches as b

# Called with the batch id and its record as stored now (None: deleted).
OnChange = Callable[[str, b.BatchRecord | None], None]


class BatchRecords:
    def __init__(self, js: JetStreamContext, on_change: OnChange | None = None) -> None:
        self._records: dict[str, b.BatchRecord] = {}
        self._keys: dict[str, str] = {}  # batch id -> the key its record is under
        self._order: list[tuple[int, str]] = []  # (created_at, id), oldest first
        self._on_change = on_change
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
