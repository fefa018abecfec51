"""The Batch API's storage, shared by the edges (create, read, cancel) and the batch runner.

Files: content in the ``sy_files`` object store under the file id, the record in
``sy_batches`` under ``f.<owner>.<id>``. Batches: ``sy_batches`` under ``b.<owner>.<id>``,
changed only with compare-and-set so an edge's cancel and the runner's progress never
overwrite each other. ``<owner>`` is :func:`~switchyard.schemas.batches.owner_token`, so a
tenant's list reads its own records, not everyone's. Records written before owner keys
(``f.<id>``, ``b.<id>``) are still found, listed and changed where they are; the runner's
sweep moves each once it can no longer change (:meth:`BatchStore.move_legacy`).
Line results: ``sy_batch_lines`` under ``<batch>.<line>``, created once (a second result for
the same line is refused by the bucket, so a line is never recorded twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    ObjectDeletedError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from nats.nuid import NUID

from switchyard.bus import subjects
from switchyard.errors import Conflict, ServiceUnavailable
from switchyard.runtime.kvlatest import MARKERS, READ_IDLE_S, latest, readers_limit
from switchyard.runtime.objects import (
    CHUNK_BYTES,
    ObjectWriter,
    StoredObject,
    open_object,
    purge_dead_chunks,
    record_subject,
    stream_of,
)
from switchyard.runtime.pages import read_all
from switchyard.schemas import batches as b

UPDATE_ATTEMPTS = 8
# JetStream's error codes when a compare-and-set loses (the second: another one on the same
# key is still being applied, in a replicated stream).
WRONG_LAST_SEQUENCE = (10071, 10164)
# JetStream's error codes when a stream has no room: a stream's own limit (the files store's
# cap: "maximum bytes exceeded"), and the server's or account's store.
STREAM_STORE_FAILED = 10077
STORAGE_EXCEEDED = (10023, 10047)


class BatchStore:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=10)
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
        """Store a file held whole (a message batch's input, made in memory), then its record:
        :meth:`store_file` over pieces of it."""

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(data), CHUNK_BYTES):
                yield data[start : start + CHUNK_BYTES]

        await self.store_file(record.file.id, pieces(), lambda _size: record)

    async def store_file(
        self,
        file_id: str,
        chunks: AsyncIterable[bytes],
        record: Callable[[int], b.FileRecord],
    ) -> b.FileRecord:
        """Store a file's bytes as ``chunks`` come (an upload: never more than a chunk held
        here), then its record, made by ``record`` from the size stored. Neither is left
        behind when either fails."""
        writer = await self.file_writer(file_id)
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            size = await writer.close()
        except BaseException as exc:
            await asyncio.shield(writer.abort())  # (also when the caller is cancelled)
            if isinstance(exc, APIError) and is_full(exc):
                raise store_full() from None
            raise
        made = record(size)
        await self._save_or_drop(made)
        return made

    async def _save_or_drop(self, record: b.FileRecord) -> None:
        try:
            await self.save_file(record)
        except BaseException:  # bytes without a record would never expire: remove them
            with contextlib.suppress(Exception):
                await asyncio.shield(self._drop_unrecorded(record))
            raise

    async def _drop_unrecorded(self, record: b.FileRecord) -> None:
        """Delete a file's bytes unless its record is stored after all (its write landed,
        the answer did not)."""
        if await self._find(b.FILE_PREFIX, record.file.id, record.owner) is None:
            await self._delete_object(record.file.id)

    async def file_writer(self, file_id: str) -> ObjectWriter:
        """Writes a file's bytes as they come; :meth:`save_file` its record once they are
        stored (its size is the writer's ``size`` then)."""
        return ObjectWriter(self._js, await self._objects(), subjects.FILES_BUCKET, file_id)

    async def save_file(self, record: b.FileRecord) -> None:
        """Store a file's record (its bytes are stored already)."""
        key = b.owned_key(b.FILE_PREFIX, record.owner, record.file.id)
        await (await self._kv()).put(key, b.ENCODER.encode(record))

    async def usage(self, owner: str, now: float) -> Usage:
        """What ``owner``'s files take: the sizes their records carry, of every file not
        deleted and not expired at ``now`` (uploads, batch outputs, message batches' files)."""
        live = [r.file for r in await self.files(owner) if not b.file_gone(r.file, now)]
        return Usage(sum(f.bytes for f in live), len(live))

    async def room(self) -> int | None:
        """Bytes the files store can still take (None: it has no cap). A store holding more
        than its cap (the cap was lowered) has none."""
        info = await self._js.stream_info(stream_of(subjects.FILES_BUCKET))
        cap = info.config.max_bytes or -1
        if cap < 0:
            return None
        return max(0, cap - (info.state.bytes or 0))

    async def file(self, file_id: str, owner: str) -> b.FileRecord | None:
        """The record of ``owner``'s file (None: no such file, or it is someone else's)."""
        found = await self._find(b.FILE_PREFIX, file_id, owner)
        return b.FILE_RECORD.decode(found.value) if found is not None else None

    async def content(self, file_id: str) -> bytes | None:
        """A file's bytes; None when they are gone (the file was deleted).

        Raises:
            BusError: the bytes stopped arriving, or do not match the stored digest.
        """
        found = await self.download(file_id)
        return await found.read() if found is not None else None

    async def download(self, file_id: str) -> StoredObject | None:
        """A file's size, and its bytes a chunk at a time, each fetched when the reader asks
        (a response that streams them, the batch runner reading an input as lines go out);
        None when they are gone."""
        if not b.is_id(file_id):
            return None
        return await open_object(self._js, await self._objects(), file_id)

    async def files(self, owner: str) -> list[b.FileRecord]:
        """``owner``'s files (uploads and batch outputs), newest first (ties by id, so pages
        made from two reads agree)."""
        found = await self._owned(b.FILE_PREFIX, owner)
        return [r for r in _files(found) if r.owner == owner]

    async def delete_file(self, file_id: str, owner: str) -> None:
        """Remove a file: its record first (no caller finds it from then on), then its bytes
        (an object store delete purges their chunks)."""
        await self._delete(b.FILE_PREFIX, file_id, owner)
        await self._delete_object(file_id)

    async def expire_file(self, file_id: str, owner: str) -> None:
        """Remove an expired file for good: its bytes, then every trace of its record (a
        delete would leave a marker per file in the bucket for ever)."""
        await self._delete_object(file_id)
        await self._purge_key(b.owned_key(b.FILE_PREFIX, owner, file_id))
        await self._purge_key(b.legacy_key(b.FILE_PREFIX, file_id))

    async def purge_dead_chunks(self, now: float, dead_after_s: float) -> int:
        """Purge the chunks a writer killed half-way left in the files store; returns how many
        files' worth (see :func:`~switchyard.runtime.objects.purge_dead_chunks`)."""
        return await purge_dead_chunks(
            self._nc,
            self._js,
            await self._objects(),
            subjects.FILES_BUCKET,
            now,
            dead_after_s=dead_after_s,
        )

    async def _delete_object(self, file_id: str) -> None:
        """Purge a file's chunks, then the "deleted" entry nats-py's delete writes in their
        place (~200 bytes per file, kept for ever otherwise)."""
        try:
            await (await self._objects()).delete(file_id)
        except (ObjectNotFoundError, ObjectDeletedError):
            pass
        except APIError as exc:
            # A full store has no room for the "deleted" entry: nats-py purged the chunks
            # before it failed, and the purge below removes the record. Deleting files is
            # how a full store gets room again, so it must not need any.
            if not is_full(exc):
                raise
        bucket = subjects.FILES_BUCKET
        await self._js.purge_stream(stream_of(bucket), subject=record_subject(bucket, file_id))

    async def _purge_key(self, key: str) -> None:
        await self._js.purge_stream(
            f"KV_{subjects.BATCHES_BUCKET}", subject=f"$KV.{subjects.BATCHES_BUCKET}.{key}"
        )

    # ---- records of either kind, where they are ----

    async def _find(self, prefix: str, object_id: str, owner: str) -> _Found | None:
        """The live entry of ``owner``'s record: under its owner key, else (written before
        owner keys) under its id alone. None when there is none, when it is someone else's,
        and for an id that cannot be ours (never a key lookup: a KV key cannot hold every
        character a path can)."""
        if not b.is_id(object_id):
            return None
        kv = await self._kv()
        mine = b.owned_key(prefix, owner, object_id)
        # The owner key again last: a sweep that moved the record between the first two reads
        # created the owner key before it removed the old one.
        for key in (mine, b.legacy_key(prefix, object_id), mine):
            found = await _get(kv, key)
            if found is not None:
                decoder = b.FILE_RECORD if prefix == b.FILE_PREFIX else b.BATCH_RECORD
                return found if decoder.decode(found.value).owner == owner else None
        return None

    async def _delete(self, prefix: str, object_id: str, owner: str) -> None:
        """Delete ``owner``'s record wherever it is, with compare-and-set: under both keys
        when a move was cut short, and at its new key when a sweep moves it meanwhile."""
        kv = await self._kv()
        for _ in range(UPDATE_ATTEMPTS):
            found = await self._find(prefix, object_id, owner)
            if found is None:
                return
            await _delete_at(kv, found.key, found.revision)  # lost a race: look again
        raise Conflict(f"{object_id} is changing too fast; try again")

    async def _owned(self, prefix: str, owner: str) -> list[bytes]:
        """Every record of one kind whose key carries ``owner``'s token, and every one written
        before owner keys (for callers to check their ``owner``), in two filtered reads: the
        old keys first, so a record that moves in between is read at its new key, and one
        under both keys (a move cut short) counts once."""
        kv = await self._kv()
        legacy = await latest(self._js, kv, prefix + "*")
        mine = await latest(self._js, kv, f"{prefix}{b.owner_token(owner)}.*")
        by_id = {b.id_of(k): v for k, v in legacy.items()}
        by_id.update((b.id_of(k), v) for k, v in mine.items())
        return list(by_id.values())

    async def move_legacy(self, legacy: Iterable[tuple[str, bytes, int]]) -> int:
        """Move records stored under their id alone (``f.<id>``, ``b.<id>``) to their owner
        keys, each (key, value, revision) as :meth:`contents` read it; returns how many moved.

        Only records that no longer change move: every file record, and batches that ended (a
        running batch stays where it is and moves at a sweep after it ends). The copy comes
        first, then the old key is deleted with compare-and-set and purged, so a crash in
        between leaves the record under both keys (read once, deleted from both), never none.
        The copy is written only where the owner key never had an entry, so a copy its owner
        deleted stays deleted. If the old key changed since it was read (its owner deleted
        it), the copy is withdrawn with a purge marker, which followers see.
        """
        kv = await self._kv()
        moved = 0
        for key, value, revision in legacy:
            prefix = key[: key.index(".") + 1]
            if prefix == b.FILE_PREFIX:
                owner = b.FILE_RECORD.decode(value).owner
            else:
                record = b.BATCH_RECORD.decode(value)
                if record.batch.status not in b.ENDED:
                    continue
                owner = record.owner
            new = b.owned_key(prefix, owner, b.id_of(key))
            # Refused when the key has any entry: a copy from a sweep cut short, or its delete.
            with contextlib.suppress(KeyWrongLastSequenceError):
                await kv.update(new, value, last=0)
            if not await _delete_at(kv, key, revision):
                await kv.purge(new)
                continue
            await self._purge_key(key)
            moved += 1
        return moved

    # ---- batches ----

    async def forget(self, batch_id: str, owner: str) -> None:
        """Remove a finished batch's record and its history. A live record leaves a purge
        marker, so processes following the bucket see it go; the next sweep purges that."""
        kv = await self._kv()
        for key in (
            b.owned_key(b.BATCH_PREFIX, owner, batch_id),
            b.legacy_key(b.BATCH_PREFIX, batch_id),
        ):
            if await _get(kv, key) is not None:
                await kv.purge(key)
            else:
                await self._purge_key(key)

    async def delete(self, batch_id: str, owner: str) -> None:
        """Delete a batch's record (the edges: a deleted message batch). The delete leaves a
        marker, which the runner's sweep purges (:meth:`purge_markers`)."""
        await self._delete(b.BATCH_PREFIX, batch_id, owner)

    async def purge_markers(self, markers: Iterable[str]) -> None:
        """Purge the markers deletes left in ``sy_batches`` (files and batches deleted by
        their owners, batches forgotten, copies withdrawn; :meth:`contents` finds them). Keys
        are ids, never reused, and a move never writes over a marker, so nothing written
        after a delete can be purged with its marker."""
        for key in markers:
            await self._purge_key(key)

    async def contents(self) -> Contents:
        """Every file and batch, the keys whose last entry is a delete marker, and the
        records still under their id alone (with their revision, for :meth:`move_legacy`),
        from one read of ``sy_batches`` (the runner's sweep needs all of them)."""
        markers: set[str] = set()
        revisions: dict[str, int] = {}
        kv = await self._kv()
        found = await latest(self._js, kv, ">", deleted=markers, revisions=revisions)
        files = [v for k, v in found.items() if k.startswith(b.FILE_PREFIX)]
        batches = [v for k, v in found.items() if k.startswith(b.BATCH_PREFIX)]
        legacy = [
            (k, v, revisions[k])
            for k, v in found.items()
            if b.is_legacy(k) and k.startswith((b.FILE_PREFIX, b.BATCH_PREFIX))
        ]
        # Only files' and batches' markers: the runner lease's (runner.leader, deleted by a
        # clean stop) is purged by no sweep, which could take a lease written meanwhile.
        markers = {k for k in markers if k.startswith((b.FILE_PREFIX, b.BATCH_PREFIX))}
        return Contents(_files(files), _records(batches), markers, legacy)

    async def create(self, record: b.BatchRecord) -> None:
        key = b.owned_key(b.BATCH_PREFIX, record.owner, record.batch.id)
        await (await self._kv()).create(key, b.ENCODER.encode(record))

    async def get(self, batch_id: str, owner: str) -> tuple[b.BatchRecord, int] | None:
        """``owner``'s batch and its revision (None: no such batch, or someone else's)."""
        found = await self._find(b.BATCH_PREFIX, batch_id, owner)
        if found is None:
            return None
        return b.BATCH_RECORD.decode(found.value), found.revision

    async def update(
        self, batch_id: str, owner: str, change: Callable[[b.BatchRecord], b.BatchRecord | None]
    ) -> b.BatchRecord | None:
        """Apply ``change`` to ``owner``'s batch with compare-and-set, re-reading when another
        writer won (or a sweep moved the record).

        ``change`` returns the new record, or None to leave it as it is. Returns the record
        as stored afterwards (None: no such batch).

        Raises:
            Conflict: still losing races after several attempts.
        """
        kv = await self._kv()
        for _ in range(UPDATE_ATTEMPTS):
            found = await self._find(b.BATCH_PREFIX, batch_id, owner)
            if found is None:
                return None
            record = b.BATCH_RECORD.decode(found.value)
            updated = change(record)
            if updated is None:
                return record
            try:
                await kv.update(found.key, b.ENCODER.encode(updated), last=found.revision)
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise Conflict(f"batch {batch_id} is changing too fast; try again")

    async def records(self, owner: str) -> list[b.BatchRecord]:
        """``owner``'s batches, newest first (ties by id, so pages made from two reads agree).
        Everyone's: :class:`~switchyard.runtime.batchrecords.BatchRecords`."""
        found = await self._owned(b.BATCH_PREFIX, owner)
        return [r for r in _records(found) if r.owner == owner]

    # ---- line results ----

    async def record_line(self, batch_id: str, line: int, result: bytes) -> bool:
        """Store a line's result; False when the line already had one (kept as it was)."""
        try:
            await (await self._line_kv()).create(f"{batch_id}.{line}", result)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def line_results(self, batch_id: str) -> AsyncGenerator[tuple[int, bytes]]:
        """Every recorded result of a batch as (line number, result), in the order they were
        recorded, handed over as they are read: pulled a page of at most 16 MB at a time
        (:func:`~switchyard.runtime.pages.read_all`), so a large batch's results are never all
        in memory here. A watch, which this used before, is pushed as fast as the server can
        send, whatever the reader does.

        Raises:
            BusError: the results stopped arriving, or one went missing on the way.
        """
        stream = f"KV_{subjects.BATCH_LINES_BUCKET}"
        name = NUID().next().decode()
        async with readers_limit():
            await self._js.add_consumer(
                stream,
                ConsumerConfig(
                    name=name,
                    filter_subject=f"$KV.{subjects.BATCH_LINES_BUCKET}.{batch_id}.>",
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=READ_IDLE_S,  # removed by the server if we die reading
                    mem_storage=True,
                    num_replicas=1,
                ),
            )
        try:
            pending = (await self._js.consumer_info(stream, name)).num_pending or 0
            async with contextlib.aclosing(read_all(self._nc, stream, name, pending)) as msgs:
                async for msg in msgs:
                    operation = (msg.headers or {}).get("KV-Operation")
                    if msg.data and operation not in MARKERS:
                        yield int(msg.subject.rsplit(".", 1)[1]), msg.data
        finally:
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(stream, name)

    async def forget_lines(self, batch_id: str) -> None:
        """Drop a finished batch's line results (its output files hold them now)."""
        await self._js.purge_stream(
            f"KV_{subjects.BATCH_LINES_BUCKET}",
            subject=f"$KV.{subjects.BATCH_LINES_BUCKET}.{batch_id}.>",
        )


class Usage(NamedTuple):
    """Files stored: their bytes and how many."""

    size: int
    files: int


def is_full(exc: APIError) -> bool:
    """Whether a JetStream refusal means the store has no room for what was written."""
    if exc.err_code in STORAGE_EXCEEDED:
        return True
    return exc.err_code == STREAM_STORE_FAILED and "maximum bytes" in (exc.description or "")


def store_full() -> ServiceUnavailable:
    """What an upload gets when the files store (every tenant's files together) is full."""
    return ServiceUnavailable(
        "The gateway's file storage is full, for every user of it: delete files you no longer "
        "need (DELETE /v1/files/{file_id}, or a message batch's with DELETE "
        "/v1/messages/batches/{id}), or try again once others' files expire",
        code="file_storage_full",
    )


class Contents(NamedTuple):
    files: list[b.FileRecord]
    records: list[b.BatchRecord]
    markers: set[str]
    legacy: list[tuple[str, bytes, int]]  # (key, value, revision) under an id alone


class _Found(NamedTuple):
    key: str
    value: bytes
    revision: int


def _files(values: Iterable[bytes]) -> list[b.FileRecord]:
    out = [b.FILE_RECORD.decode(v) for v in values]
    return sorted(out, key=lambda r: (r.file.created_at, r.file.id), reverse=True)


def _records(values: Iterable[bytes]) -> list[b.BatchRecord]:
    out = [b.BATCH_RECORD.decode(v) for v in values]
    return sorted(out, key=lambda r: (r.batch.created_at, r.batch.id), reverse=True)


async def _get(kv: KeyValue, key: str) -> _Found | None:
    """``key``'s live entry (None: never stored, deleted or purged)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # also a deleted or purged key
        return None
    return _Found(key, entry.value, entry.revision or 0) if entry.value else None


async def _delete_at(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete ``key`` if its last revision is still ``revision``; False when it is not (nats-py
    raises a plain API error there, where ``update`` raises its own)."""
    try:
        await kv.delete(key, last=revision)
    except APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            return False
        raise
    return True
