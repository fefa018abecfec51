"""Anthropic's Message Batches API at the edges (``/v1/messages/batches``).

A create stores the batch's requests as its input file and a batch record for the
``/v1/messages`` endpoint; the batch runner (``switchyard serve batch``) runs them at ``batch``
priority and billed to the key, as it runs OpenAI batches, and writes one results file. The
shapes are Anthropic's (:mod:`switchyard.dialects.anthropic.batches`), errors too. Scoped like
the OpenAI Batch API: another tenant's batch is a 404, and OpenAI's ``/v1/batches`` and
``/v1/files`` do not show these batches or their files (nor these routes OpenAI's batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from typing import IO, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.dialects.anthropic import batches as ab
from switchyard.dialects.anthropic.paging import page
from switchyard.errors import ApiError, Conflict, NoSuchObject, PayloadTooLarge
from switchyard.ingress import pages
from switchyard.ingress.batches import (
    COMPLETION_WINDOW_S,
    BatchApi,
    new_id,
    streamed,
)
from switchyard.ingress.responses import JSON, dialect_error
from switchyard.runtime import forwarded
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.tasks import outlast
from switchyard.schemas import batches as b
from switchyard.schemas.keys import ClientKey

_ENCODE = msgspec.json.Encoder()
JSONL = "application/x-jsonl"
CREATES_AT_ONCE = 2  # message batch creates an edge holds in memory at once
SPOOL_BYTES = 1024 * 1024  # a create's body beyond this waits on disk


def _input_of(spool: IO[bytes]) -> tuple[bytes, int]:
    """A create's input file and its number of requests (the body goes when this returns)."""
    return ab.input_lines(spool.read())


def _fail(exc: ApiError) -> Response:
    return dialect_error(exc, as_anthropic=True)


def _ok(doc: Any) -> Response:
    return Response(_ENCODE.encode(doc), media_type=JSON)


def _base_url(request: Request) -> str:
    """Where the client reached this edge, through any TLS-ending proxy: the SDK fetches
    ``results_url`` as given, key and all, so it must not say http://internal-host."""
    return forwarded.base_url(request)


async def _spool(request: Request, spool: IO[bytes], limit: int, too_large: ApiError) -> None:
    size, pending = 0, bytearray()
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        pending += chunk
        if len(pending) >= SPOOL_BYTES:
            await asyncio.to_thread(spool.write, pending)
            pending = bytearray()
    spool.write(pending)
    spool.seek(0)


class MessageBatchApi:
    """``/v1/messages/batches`` for one edge, on the OpenAI Batch API's store (``files``)."""

    def __init__(self, files: BatchApi) -> None:
        self.files = files
        # Making a create's input file from its body takes ~2.4x the body (+195-248 MB for
        # 97 MB); more at once could take an edge past its memory limit, LLM traffic and all.
        # Others wait their turn with their body read and spooled to disk (a slow sender
        # never holds a turn, and a waiting create holds no memory).
        self._creating = asyncio.Semaphore(CREATES_AT_ONCE)

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("/v1/messages/batches", "POST", self.create),
            ("/v1/messages/batches", "GET", self.list),
            ("/v1/messages/batches/{batch_id}", "GET", self.get),
            ("/v1/messages/batches/{batch_id}", "DELETE", self.delete),
            ("/v1/messages/batches/{batch_id}/cancel", "POST", self.cancel),
            ("/v1/messages/batches/{batch_id}/results", "GET", self.results),
        ]

    async def _body(self, request: Request) -> IO[bytes]:
        """The request body, spooled to disk past a megabyte (a create waiting for its turn
        holds no memory for it); refused once it passes the Batch API's file size limit
        (Anthropic answers an oversized batch with a 413 too)."""
        limit = self.files.max_file_bytes
        too_large = PayloadTooLarge(f"a message batch is limited to {limit} bytes of JSON")
        length = request.headers.get("content-length", "")
        if length.isdecimal() and (len(length) > 18 or int(length) > limit):
            raise too_large
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        try:
            await _spool(request, spool, limit, too_large)
        except BaseException:
            spool.close()
            raise
        return spool

    async def create(self, request: Request) -> Response:
        try:
            key, owner, store = await self.files.caller(request)
            await self.files.within_budget(key)
            await self.files.quota.precheck(owner, store, 0)  # its input file is stored too
            # Read first: a slow sender holds no turn. Then up to ``max_file_bytes`` of JSON
            # to check and rewrite (~0.2 s for 96 MB), in a thread: the edge's LLM traffic
            # waits for its longest single step (one decode of the whole body, ~50 ms).
            with await self._body(request) as spool:
                async with self._creating:
                    work = asyncio.ensure_future(asyncio.to_thread(_input_of, spool))
                    try:
                        data, count = await asyncio.shield(work)
                    except asyncio.CancelledError:
                        # The thread cannot be stopped: keep the turn (and the spooled body)
                        # until it lets go of the body, or its memory would not be counted.
                        await outlast(work)
                        raise
                    return await self._store(
                        request, key=key, owner=owner, store=store, data=data, count=count
                    )
        except ApiError as exc:
            return _fail(exc)

    async def _store(
        self,
        request: Request,
        *,
        key: ClientKey,
        owner: str,
        store: BatchStore,
        data: bytes,
        count: int,
    ) -> Response:
        """Store the input file and the batch record of a create."""
        now = int(time.time())
        batch_id = new_id(ab.ID_PREFIX, now)  # (placed in a list once deleted)
        lifetime = self.files.file_expiry_s
        source = b.FileObject(
            id=f"file-{batch_id}-input",
            bytes=len(data),
            created_at=now,
            filename=f"{batch_id}_input.jsonl",
            purpose=b.MESSAGE_BATCH_INPUT,
            expires_at=now + lifetime if lifetime else None,
        )
        async with self.files.quota.holding(owner, len(data), store):
            await store.put_file(b.FileRecord(file=source, owner=owner), data)
        batch = b.Batch(
            id=batch_id,
            endpoint=b.MESSAGES_ENDPOINT,
            input_file_id=source.id,
            completion_window="24h",
            status="validating",
            created_at=now,
            expires_at=now + COMPLETION_WINDOW_S,
            request_counts=b.RequestCounts(total=count),
        )
        record = b.BatchRecord(batch=batch, owner=owner, key_id=key.id, key_hash=key.hash)
        try:
            await store.create(record)
        except BaseException:
            # The caller is told the create failed: its input must not stay behind (it
            # would be kept for ``file_expiry_s``). Should the record have landed after
            # all, that batch fails for want of its input rather than running unasked.
            with contextlib.suppress(Exception):
                await asyncio.shield(store.delete_file(source.id, owner))
            raise
        return _ok(ab.batch_object(batch, _base_url(request)))

    async def _owned(self, request: Request) -> tuple[b.BatchRecord, BatchStore]:
        _, owner, store = await self.files.caller(request)
        batch_id = request.path_params["batch_id"]
        found = await store.get(batch_id, owner)
        if found is None or not b.is_message_batch(found[0].batch):
            raise NoSuchObject(f"No such message batch: {batch_id[:128]}")
        return found[0], store

    async def _ended(self, request: Request, hint: str) -> tuple[b.BatchRecord, BatchStore]:
        """The caller's batch, once it has ended (409 before, with ``hint``)."""
        record, store = await self._owned(request)
        if not ab.ended(record.batch):
            raise self.files.busy(
                f"message batch {record.batch.id} is still processing; {hint}",
                record.batch.status,
            )
        return record, store

    async def get(self, request: Request) -> Response:
        try:
            record, _ = await self._owned(request)
            return _ok(ab.batch_object(record.batch, _base_url(request)))
        except ApiError as exc:
            return _fail(exc)

    async def list(self, request: Request) -> Response:
        """The caller's message batches, newest first, in Anthropic's pages."""
        try:
            _, owner, store = await self.files.caller(request)
            mine = {
                r.batch.id: r.batch
                for r in await store.records(owner)
                if b.is_message_batch(r.batch)
            }
            base = _base_url(request)

            def place(batch_id: str) -> tuple[int, str] | None:
                """Where a batch sorts (``store.records``' order), a deleted one included:
                its id starts with its ``created_at`` (ids made before that cannot be)."""
                known = mine.get(batch_id)
                at = known.created_at if known else pages.id_time(batch_id, ab.ID_PREFIX)
                return None if at is None else (at, batch_id)

            def render(batch_id: str) -> Any:
                return ab.batch_object(mine[batch_id], base)

            doc = page(list(mine), request.query_params, render, "batch", place)
            return _ok(doc)
        except ApiError as exc:
            return _fail(exc)

    async def cancel(self, request: Request) -> Response:
        try:
            record, store = await self._owned(request)
            if ab.ended(record.batch):
                raise Conflict(f"message batch {record.batch.id} has already ended", no_retry=True)
            updated = await store.update(record.batch.id, record.owner, b.cancelling)
            return _ok(ab.batch_object((updated or record).batch, _base_url(request)))
        except ApiError as exc:
            return _fail(exc)

    async def delete(self, request: Request) -> Response:
        """Delete an ended batch and its files (one still processing must be cancelled first,
        as at Anthropic)."""
        try:
            record, store = await self._ended(request, "cancel it, then delete it once ended")
            batch = record.batch
            await store.delete(batch.id, record.owner)
            for file_id in (batch.input_file_id, batch.output_file_id):
                if file_id:
                    await store.delete_file(file_id, record.owner)
            return Response(ab.deleted_body(batch.id), media_type=JSON)
        except ApiError as exc:
            return _fail(exc)

    async def results(self, request: Request) -> Response:
        """The results file (JSONL, one line per request) of an ended batch."""
        try:
            record, store = await self._ended(
                request, "its results are ready once processing_status is `ended`"
            )
            batch = record.batch
            found = None
            if batch.output_file_id:
                file = await store.file(batch.output_file_id, record.owner)
                if file is not None and not b.file_gone(file.file, time.time()):
                    found = await store.download(batch.output_file_id)
            if found is None:  # failed as a whole, or the results file expired
                raise NoSuchObject(f"message batch {batch.id} has no results (any more)")
            return streamed(found, JSONL)
        except ApiError as exc:
            return _fail(exc)
