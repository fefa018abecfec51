"""The Batch API's storage, shared by the edges (create, read, cancel) and the batch runner.

Files: content in the ``sy_files`` object store under the file id, the record in
``sy_batches`` under ``f.<id>``. Batches: ``sy_batches`` under ``b.<id>``, changed only with
compare-and-set so an edge's cancel and the runner's progress never overwrite each other.
Line results: ``sy_batch_lines`` under ``<batch>.<line>``, created once (a second result for
the same line is refused by the bucket, so a line is never recorded twice).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from nats.js import JetStreamContext
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    ObjectDeletedError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from switchyard.bus import subjects
from switchyard.errors import Conflict
from switchyard.runtime.objects import StoredObject, open_object
from switchyard.schemas import batches as b

UPDATE_ATTEMPTS = 8
# What a file or batch id can be (ours are `file-<nuid>`, `batch_<nuid>`): anything else is
# no such object, never a key lookup (a KV key cannot hold every character a path can).
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class BatchStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._batches: KeyValue | None = None
        self._lines: KeyValue | None = None
        self._files: ObjectStore | None = None

    async def _kv(self) -> KeyValue:
        if self._batches is None:
            self._batches = await self._js.key_value(subjects.BATCHES_BUCKET)
        return self._batches

    async def _line_kv(self) -> KeyValue:
        if self._lines is None:
            self._lines = await self._js.key_value(subjects.BATCH_LINES_BUCKET)
        return self._lines

    async def _objects(self) -> ObjectStore:
        if self._files is None:
            self._files = await self._js.object_store(subjects.FILES_BUCKET)
        return self._files

    # ---- files ----

    async def put_file(self, record: b.FileRecord, data: bytes) -> None:
        await (await self._objects()).put(record.file.id, data)
        await (await self._kv()).put(b.FILE_PREFIX + record.file.id, b.ENCODER.encode(record))

    async def file(self, file_id: str) -> b.FileRecord | None:
        if not _ID.fullmatch(file_id):
            return None
        try:
            entry = await (await self._kv()).get(b.FILE_PREFIX + file_id)
        except KeyNotFoundError:
            return None
        return b.FILE_RECORD.decode(entry.value) if entry.value else None

    async def content(self, file_id: str) -> bytes | None:
        """A file's bytes; None when they are gone (the file was deleted).

        Raises:
            BusError: the bytes stopped arriving, or do not match the stored digest.
        """
        found = await self.download(file_id)
        return await found.read() if found is not None else None

    async def download(self, file_id: str) -> StoredObject | None:
        """A file's size, and its bytes chunk by chunk (for a response that streams them);
        None when they are gone."""
        if not _ID.fullmatch(file_id):
            return None
        return await open_object(self._js, await self._objects(), file_id)

    async def files(self) -> list[b.FileRecord]:
        """Every file (uploads and batch outputs), newest first (ties by id, so pages made
        from two reads agree)."""
        return _files((await _latest(await self._kv(), b.FILE_PREFIX + ">")).values())

    async def delete_file(self, file_id: str) -> None:
        """Remove a file: its record first (no caller finds it from then on), then its bytes
        (an object store delete purges their chunks)."""
        with contextlib.suppress(KeyNotFoundError):
            await (await self._kv()).delete(b.FILE_PREFIX + file_id)
        await self._delete_object(file_id)

    async def expire_file(self, file_id: str) -> None:
        """Remove an expired file for good: its bytes, then every trace of its record (a
        delete would leave a marker per file in the bucket for ever)."""
        await self._delete_object(file_id)
        await self._purge_key(b.FILE_PREFIX + file_id)

    async def _delete_object(self, file_id: str) -> None:
        """Purge a file's chunks, then the "deleted" entry nats-py's delete writes in their
        place (~200 bytes per file, kept for ever otherwise)."""
        with contextlib.suppress(ObjectNotFoundError, ObjectDeletedError):
            await (await self._objects()).delete(file_id)
        name = base64.urlsafe_b64encode(file_id.encode()).decode()  # as nats-py names it
        await self._js.purge_stream(
            f"OBJ_{subjects.FILES_BUCKET}", subject=f"$O.{subjects.FILES_BUCKET}.M.{name}"
        )

    async def _purge_key(self, key: str) -> None:
        await self._js.purge_stream(
            f"KV_{subjects.BATCHES_BUCKET}", subject=f"$KV.{subjects.BATCHES_BUCKET}.{key}"
        )

    # ---- batches ----

    async def forget(self, batch_id: str) -> None:
        """Remove a finished batch's record and its history."""
        await self._purge_key(b.BATCH_PREFIX + batch_id)

    async def delete(self, batch_id: str) -> None:
        """Delete a batch's record (the edges: a deleted message batch). The delete leaves a
        marker, which the runner's sweep purges (:meth:`purge_markers`)."""
        with contextlib.suppress(KeyNotFoundError):
            await (await self._kv()).delete(b.BATCH_PREFIX + batch_id)

    async def purge_markers(self, markers: Iterable[str]) -> None:
        """Purge the markers deletes left in ``sy_batches`` (files and batches deleted by
        their owners; :meth:`contents` finds them). Keys are ids, never reused, so nothing
        written after a delete can be purged with its marker."""
        for key in markers:
            await self._purge_key(key)

    async def contents(self) -> Contents:
        """Every file and batch, and the keys whose last entry is a delete marker, from one
        read of ``sy_batches`` (the runner's sweep needs all three)."""
        markers: set[str] = set()
        found = await _latest(await self._kv(), ">", deleted=markers)
        files = [v for k, v in found.items() if k.startswith(b.FILE_PREFIX)]
        batches = [v for k, v in found.items() if k.startswith(b.BATCH_PREFIX)]
        return Contents(_files(files), _records(batches), markers)

    async def create(self, record: b.BatchRecord) -> None:
        await (await self._kv()).create(b.BATCH_PREFIX + record.batch.id, b.ENCODER.encode(record))

    async def get(self, batch_id: str) -> tuple[b.BatchRecord, int] | None:
        if not _ID.fullmatch(batch_id):
            return None
        try:
            entry = await (await self._kv()).get(b.BATCH_PREFIX + batch_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return b.BATCH_RECORD.decode(entry.value), entry.revision or 0

    async def update(
        self, batch_id: str, change: Callable[[b.BatchRecord], b.BatchRecord | None]
    ) -> b.BatchRecord | None:
        """Apply ``change`` with compare-and-set, re-reading when another writer won.

        ``change`` returns the new record, or None to leave it as it is. Returns the record
        as stored afterwards (None: no such batch).

        Raises:
            Conflict: still losing races after several attempts.
        """
        kv = await self._kv()
        for _ in range(UPDATE_ATTEMPTS):
            found = await self.get(batch_id)
            if found is None:
                return None
            record, revision = found
            updated = change(record)
            if updated is None:
                return record
            try:
                await kv.update(b.BATCH_PREFIX + batch_id, b.ENCODER.encode(updated), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise Conflict(f"batch {batch_id} is changing too fast; try again")

    async def records(self) -> list[b.BatchRecord]:
        """Every batch, newest first (ties by id, so pages made from two reads agree)."""
        return _records((await _latest(await self._kv(), b.BATCH_PREFIX + ">")).values())

    # ---- line results ----

    async def record_line(self, batch_id: str, line: int, result: bytes) -> bool:
        """Store a line's result; False when the line already had one (kept as it was)."""
        try:
            await (await self._line_kv()).create(f"{batch_id}.{line}", result)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def lines(self, batch_id: str) -> dict[int, bytes]:
        """Every recorded result of a batch, by line number."""
        found = await _latest(await self._line_kv(), f"{batch_id}.>")
        return {int(key.rsplit(".", 1)[1]): value for key, value in found.items()}

    async def forget_lines(self, batch_id: str) -> None:
        """Drop a finished batch's line results (its output files hold them now)."""
        await self._js.purge_stream(
            f"KV_{subjects.BATCH_LINES_BUCKET}",
            subject=f"$KV.{subjects.BATCH_LINES_BUCKET}.{batch_id}.>",
        )


class Contents(NamedTuple):
    files: list[b.FileRecord]
    records: list[b.BatchRecord]
    markers: set[str]


def _files(values: Iterable[bytes]) -> list[b.FileRecord]:
    out = [b.FILE_RECORD.decode(v) for v in values]
    return sorted(out, key=lambda r: (r.file.created_at, r.file.id), reverse=True)


def _records(values: Iterable[bytes]) -> list[b.BatchRecord]:
    out = [b.BATCH_RECORD.decode(v) for v in values]
    return sorted(out, key=lambda r: (r.batch.created_at, r.batch.id), reverse=True)


async def _latest(kv: KeyValue, keys: str, deleted: set[str] | None = None) -> dict[str, bytes]:
    """The live value of every key matching ``keys``, read in one pass: a watch delivers the
    last value of each key in a single stream of messages (one request per key, as
    ``keys()`` then ``get()`` did, took seconds for ten thousand batches). ``deleted``, when
    given, collects the keys whose last entry is a delete marker."""
    watcher = await kv.watch(keys)
    out: dict[str, bytes] = {}
    try:
        async for entry in watcher:
            if entry is None:  # nothing (more) stored under ``keys``
                break
            if entry.value and entry.operation not in ("DEL", "PURGE"):
                out[entry.key] = entry.value
                if deleted is not None:
                    deleted.discard(entry.key)
            else:
                out.pop(entry.key, None)
                if deleted is not None and entry.operation == "DEL":
                    deleted.add(entry.key)
            if entry.delta == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
    return out
