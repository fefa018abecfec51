"""The OpenAI Batch API at the edges: files in, batches created, read and cancelled.

The edge only stores: the upload goes to the ``sy_files`` object store, a batch record to
``sy_batches`` with the key it is billed to (its hash, which only the head and the batch
runner act on), each upload held to its tenant's storage quota (:mod:`.filequota`). The
batch runner (``switchyard serve batch``) does the work and writes the progress and output
files these endpoints read back. Everything is scoped to the caller's tenant (its key's team,
else the key): another tenant's file or batch is a 404.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import msgspec
from nats.nuid import NUID
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive

from switchyard.config import BatchSettings
from switchyard.errors import (
    ApiError,
    Conflict,
    InvalidRequest,
    NoSuchObject,
    ServiceUnavailable,
)
from switchyard.ingress import pages
from switchyard.ingress.edge import Edge, _header_key
from switchyard.ingress.filequota import FileQuota
from switchyard.ingress.responses import JSON, error_response
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.objects import StoredObject
from switchyard.runtime.request_body import read_body
from switchyard.schemas import batches as b
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.scheduling import fair_tenant

# A batch create is a few fields and at most 16 metadata pairs: a larger body is no batch.
CREATE_MAX_BYTES = 64 * 1024

COMPLETION_WINDOW_S = 86400
# Where msgspec's validation errors name a field: "- at `$.metadata[...]`", "field `x`".
_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)|required field `([A-Za-z_]+)`")
# OpenAI's file purposes: a list may ask for any (only `batch` and `batch_output` are kept
# here, so the others list nothing); another is a 400 naming `purpose`, as at OpenAI.
PURPOSES = frozenset(
    {
        "assistants",
        "assistants_output",
        "batch",
        "batch_output",
        "evals",
        "fine-tune",
        "fine-tune-results",
        "user_data",
        "vision",
    }
)
_nuid = NUID()
READ_BYTES = 1024 * 1024
FORM_SLACK = 64 * 1024  # an upload's body beyond its file: the form's framing and fields
FIELD_BYTES = 64 * 1024  # largest form field other than the file (``purpose``...)
FORM_FIELDS = 16  # most form fields other than the file
# The most of an upload's body that can be other than its file (what its length, less this,
# says the file is at least).
FORM_OVERHEAD = FORM_SLACK + FORM_FIELDS * FIELD_BYTES


def _counting(receive: Receive, limit: int, too_large: ApiError) -> Receive:
    """``receive``, refusing a body once more than ``limit`` bytes of it came."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise too_large
        return message

    return counted


_ENCODE = msgspec.json.Encoder()


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    """An upload's bytes from the parser's spooled copy (its size checked already), a
    megabyte at a time (each read is a hop to a thread)."""
    while chunk := await upload.read(READ_BYTES):
        yield chunk


def streamed(found: StoredObject, media_type: str) -> StreamingResponse:
    """A stored file as the response body, chunk by chunk as the store sends them (a batch's
    output can be hundreds of megabytes: it is never held whole)."""
    return StreamingResponse(
        found.chunks, media_type=media_type, headers={"content-length": str(found.size)}
    )


def by_path(routes: Iterable[tuple[str, str, Any]]) -> list[tuple[str, list[str], Any]]:
    """One route per path, answering each of its methods (HEAD as GET): a path served by
    one route per method answered any other method with a 405 whose ``Allow`` named only the
    first route's (``PUT /v1/files/{id}``: ``GET, HEAD``, not ``DELETE``)."""
    handlers: dict[str, dict[str, Any]] = {}
    for path, method, endpoint in routes:
        handlers.setdefault(path, {})[method] = endpoint
    return [(path, list(of_path), _dispatch(of_path)) for path, of_path in handlers.items()]


def _dispatch(handlers: dict[str, Any]) -> Any:
    async def by_method(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        response: Response = await handlers[method](request)
        return response

    return by_method


def new_id(prefix: str, created_at: int | None = None) -> str:
    """A new object's id; with ``created_at``, one that starts with it, so a list continues
    after it once it is deleted (:mod:`.pages`)."""
    nuid = _nuid.next().decode()
    return f"{prefix}{nuid}" if created_at is None else pages.stamped_id(prefix, nuid, created_at)


def _page_size(raw: str | None, default: int = 20, most: int = 100) -> int:
    """``limit`` of a list call: ``default`` when absent, 1 to ``most`` when given (OpenAI's
    bounds: batches 20 and 100, files 10,000 and 10,000).

    Raises:
        InvalidRequest: not a whole number from 1 to ``most``.
    """
    if raw is None:
        return default
    if not (raw.isdecimal() and len(raw) <= 6 and 1 <= int(raw) <= most):
        raise InvalidRequest(f"limit must be a whole number from 1 to {most}", param="limit")
    return int(raw)


def _expires_after(anchor: Any, seconds: Any) -> int | None:
    """The lifetime an upload asks for (``expires_after`` as the SDKs send it in the form:
    ``expires_after[anchor]`` and ``expires_after[seconds]``); None when it asks for none.

    Raises:
        InvalidRequest: only one half given, another anchor, or seconds outside OpenAI's
            bounds (an hour to thirty days).
    """
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after needs anchor `created_at` and seconds", param="expires_after"
        )
    low, high = b.EXPIRY_MIN_S, b.EXPIRY_MAX_S
    if not (
        isinstance(seconds, str)
        and seconds.isdecimal()
        and len(seconds) <= 8
        and low <= int(seconds) <= high
    ):
        raise InvalidRequest(
            f"expires_after[seconds] must be a whole number from {low} to {high}",
            param="expires_after",
        )
    return int(seconds)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    """OpenAI's limits on a batch's ``metadata``.

    Raises:
        InvalidRequest: more than 16 pairs, a key over 64 characters or a value over 512.
    """
    if metadata is None:
        return
    if len(metadata) > b.METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata may hold at most {b.METADATA_PAIRS} pairs, not {len(metadata)}",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > b.METADATA_KEY_CHARS:
            raise InvalidRequest(
                f"metadata keys are at most {b.METADATA_KEY_CHARS} characters: {key[:80]!r}",
                param="metadata",
            )
        if len(value) > b.METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"metadata values are at most {b.METADATA_VALUE_CHARS} characters (the value "
                f"of {key!r} has {len(value)})",
                param="metadata",
            )


def _field_of(exc: Exception) -> str | None:
    """The top-level field a decoding error is about (``metadata`` for ``$.metadata[...]``,
    ``input_file_id`` for a missing one), or None (the body is no JSON object)."""
    if isinstance(exc, msgspec.ValidationError):
        found = _FIELD.search(str(exc))
        if found is not None:
            return found.group(1) or found.group(2)
    return None


def _ok(doc: Any) -> Response:
    return Response(_ENCODE.encode(doc), media_type=JSON)


class BatchApi:
    """``/v1/files`` and ``/v1/batches`` for one edge; ``store`` is attached at startup.

    Anthropic's message batches share the store and runner (:mod:`.message_batches`) but not
    these endpoints: their batches and files are not listed or served here."""

    def __init__(self, edge: Edge, settings: BatchSettings) -> None:
        self.edge = edge
        self.store: BatchStore | None = None
        self.max_file_bytes = settings.max_file_bytes
        self.file_expiry_s = settings.file_expiry_s
        self.progress_s = settings.progress_s
        # Shared with Anthropic's message batches, whose inputs are files too.
        self.quota = FileQuota(settings.tenant_max_bytes, settings.tenant_max_files)

    def busy(self, message: str, status: str) -> Conflict:
        """The 409 of what waits for a batch in ``status`` (not ended) to end: ``x-should-retry:
        false`` (the SDKs retry a 409 within seconds, in vain) unless it is ``finalizing``. A
        running batch (validating, in_progress) ends in minutes or hours; a ``cancelling`` one
        waits for the lines a provider is answering, up to ``batch.line_timeout_s`` and slack
        (and indefinitely while no runner runs). Only a ``finalizing`` one (every line ran,
        its files being written by the pass that ran them) ends within seconds, so the SDK's
        retry, told to wait about ``batch.progress_s`` (``Retry-After``), may well succeed."""
        if status != "finalizing":
            return Conflict(message, no_retry=True)
        return Conflict(message, retry_after=self.progress_s)

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("/v1/files", "POST", self.upload),
            ("/v1/files", "GET", self.list_files),
            ("/v1/files/{file_id}", "GET", self.get_file),
            ("/v1/files/{file_id}", "DELETE", self.delete_file),
            ("/v1/files/{file_id}/content", "GET", self.file_content),
            ("/v1/batches", "POST", self.create),
            ("/v1/batches", "GET", self.list),
            ("/v1/batches/{batch_id}", "GET", self.get),
            ("/v1/batches/{batch_id}/cancel", "POST", self.cancel),
        ]

    async def caller(self, request: Request) -> tuple[ClientKey, str, BatchStore]:
        key = await self.edge.authenticate(_header_key(request), request.scope)
        if self.store is None:
            raise ServiceUnavailable("the gateway is starting", code="starting")
        return key, fair_tenant(key.team, key.id), self.store

    async def within_budget(self, key: ClientKey) -> None:
        """Refuse new batch work for a key whose budget is used up, as its requests are.

        The runner sends each line on the bus, past the edge's limiter, so a key over budget
        could otherwise go on spending through batches. A batch created while the key had
        budget left runs to its end (its lines are billed to the key as they go).

        Raises:
            RateLimited: 429 ``budget_exceeded``.
        """
        limiter = self.edge.limiter
        if limiter is not None:
            refusal = await limiter.budget_refusal(key)
            if refusal is not None:
                raise refusal

    async def upload(self, request: Request) -> Response:
        try:
            _, owner, store = await self.caller(request)
            too_large = InvalidRequest(
                f"files are limited to {self.max_file_bytes} bytes", param="file"
            )
            limit = self.max_file_bytes + FORM_SLACK
            length = request.headers.get("content-length", "")
            too_long = len(length) > 18  # more digits than int() reads (4300) also lands here
            if length.isdecimal() and (too_long or int(length) > limit):
                raise too_large
            # A tenant without room for it is told before the body is read.
            at_least = int(length) - FORM_OVERHEAD if length.isdecimal() else 0
            await self.quota.precheck(owner, store, max(0, at_least))
            # The parser spools the file to disk whatever its size: a body sent without its
            # length (chunked) is counted as it comes. Other fields are small and held.
            counted = Request(request.scope, _counting(request.receive, limit, too_large))
            async with counted.form(
                max_files=1, max_fields=FORM_FIELDS, max_part_size=FIELD_BYTES
            ) as form:
                return await self._store_upload(form, owner, store, too_large)
        except ApiError as exc:
            return error_response(exc)

    async def _store_upload(
        self, form: FormData, owner: str, store: BatchStore, too_large: ApiError
    ) -> Response:
        upload = form.get("file")
        purpose = form.get("purpose")
        if purpose != "batch":
            raise InvalidRequest("only purpose `batch` is supported", param="purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("attach the JSONL file as `file`", param="file")
        filename = upload.filename or ""
        if not filename.lower().endswith(".jsonl"):  # OpenAI refuses any other name
            raise InvalidRequest(
                "Invalid file format for Batch API. Must be .jsonl: the file's name must end "
                f"in .jsonl, not {filename[:100]!r}",
                param="file",
            )
        if upload.size is not None and upload.size > self.max_file_bytes:
            raise too_large  # (before a byte of it is stored)
        if "expires_after" in form:  # e.g. curl -F expires_after='{...}': not the form
            raise InvalidRequest(
                "send expires_after as the fields expires_after[anchor] and expires_after[seconds]",
                param="expires_after",
            )
        lifetime = _expires_after(
            form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        )
        now = int(time.time())
        lifetime = lifetime or self.file_expiry_s
        file_id = new_id("file-", now)

        def record(size: int) -> b.FileRecord:
            file = b.FileObject(
                id=file_id,
                bytes=size,
                created_at=now,
                filename=filename,
                purpose="batch",
                expires_at=now + lifetime if lifetime else None,
            )
            return b.FileRecord(file=file, owner=owner)

        # From the parser's spooled copy to the store a chunk at a time: an upload costs the
        # edge one chunk of memory, not the file (up to ``max_file_bytes`` each). Its size is
        # known once spooled: checked against the tenant's quota before a byte is stored.
        size = upload.size if upload.size is not None else self.max_file_bytes
        async with self.quota.holding(owner, size, store):
            stored = await store.store_file(file_id, _chunks(upload), record)
        return _ok(stored.file)

    async def _owned_file(self, request: Request) -> tuple[b.FileRecord, BatchStore]:
        _, owner, store = await self.caller(request)
        file_id = request.path_params["file_id"]
        record = await store.file(file_id, owner)
        if (
            record is None
            or b.file_gone(record.file, time.time())
            or record.file.purpose in b.HIDDEN_PURPOSES  # a message batch's own
        ):
            raise NoSuchObject(f"No such File object: {file_id}", param="file_id")
        return record, store

    async def get_file(self, request: Request) -> Response:
        try:
            record, _ = await self._owned_file(request)
            return _ok(record.file)
        except ApiError as exc:
            return error_response(exc)

    async def file_content(self, request: Request) -> Response:
        try:
            record, store = await self._owned_file(request)
            found = await store.download(record.file.id)
            if found is None:  # deleted between the two reads
                raise NoSuchObject(f"No such File object: {record.file.id}", param="file_id")
            return streamed(found, "application/octet-stream")
        except ApiError as exc:
            return error_response(exc)

    async def list_files(self, request: Request) -> Response:
        try:
            _, owner, store = await self.caller(request)
            q = request.query_params
            limit = _page_size(q.get("limit"), default=10_000, most=10_000)
            order = q.get("order", "desc")
            if order not in ("asc", "desc"):
                raise InvalidRequest("order must be asc or desc", param="order")
            purpose = q.get("purpose")
            if purpose and purpose not in PURPOSES:
                raise InvalidRequest(
                    f"purpose must be one of {', '.join(sorted(PURPOSES))}", param="purpose"
                )
            now = time.time()
            mine = [
                r.file
                for r in await store.files(owner)
                if (not purpose or r.file.purpose == purpose)
                and r.file.purpose not in b.HIDDEN_PURPOSES
                and not b.file_gone(r.file, now)
            ]
            if order == "asc":
                mine.reverse()
            after = q.get("after")
            at = await self._file_cursor(after, mine, owner, store)
            return _ok(pages.page(mine, after, limit, cursor_at=at, newest_first=order == "desc"))
        except ApiError as exc:
            return error_response(exc)

    @staticmethod
    async def _file_cursor(
        after: str | None, listed: Sequence[b.FileObject], owner: str, store: BatchStore
    ) -> int | None:
        """When ``after`` names no file of the list (deleted, say): the time it was created,
        from its id, or from its batch's record for a batch's output or error file; None
        when that cannot be known (:func:`.pages.page` refuses it)."""
        if not after or any(f.id == after for f in listed):
            return None
        at = pages.id_time(after, "file-")
        batch_id = pages.batch_of_file(after)
        if at is None and batch_id is not None:
            found = await store.get(batch_id, owner)
            at = pages.files_time(found[0].batch) if found is not None else None
        return at

    async def delete_file(self, request: Request) -> Response:
        """Delete a file, unless a batch that has not ended reads or writes it (409: its input
        is read again if the batch runner restarts, so deleting it would fail the batch)."""
        try:
            record, store = await self._owned_file(request)
            file_id = record.file.id
            for other in await store.records(record.owner):
                batch = other.batch
                uses = (batch.input_file_id, batch.output_file_id, batch.error_file_id)
                if batch.status not in b.ENDED and file_id in uses:
                    raise self.busy(
                        f"file {file_id} belongs to batch {batch.id}, which is still "
                        f"{batch.status}; cancel the batch or wait until it ends",
                        batch.status,
                    )
            await store.delete_file(file_id, record.owner)
            return _ok({"id": file_id, "object": "file", "deleted": True})
        except ApiError as exc:
            return error_response(exc)

    async def create(self, request: Request) -> Response:
        try:
            key, owner, store = await self.caller(request)
            try:
                ask = b.BATCH_CREATE.decode(await read_body(request, CREATE_MAX_BYTES))
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
                raise InvalidRequest(f"invalid batch: {exc}", param=_field_of(exc)) from None
            if ask.endpoint not in b.ENDPOINTS:
                raise InvalidRequest(
                    f"endpoint must be one of {', '.join(b.ENDPOINTS)}", param="endpoint"
                )
            if ask.completion_window != "24h":
                raise InvalidRequest("completion_window must be 24h", param="completion_window")
            _check_metadata(ask.metadata)
            file = await store.file(ask.input_file_id, owner)
            now = int(time.time())
            if (
                file is None
                or b.file_gone(file.file, now)
                or file.file.purpose in b.HIDDEN_PURPOSES  # a message batch's own
            ):
                raise InvalidRequest(
                    f"No such File object: {ask.input_file_id}", param="input_file_id"
                )
            if file.file.purpose != "batch":  # a batch's output, say
                raise InvalidRequest(
                    f"file {ask.input_file_id} has purpose `{file.file.purpose}`; a batch's "
                    "input must be uploaded with purpose `batch`",
                    param="input_file_id",
                )
            await self.within_budget(key)
            outputs = ask.output_expires_after
            batch = b.Batch(
                id=new_id("batch_", now),
                endpoint=ask.endpoint,
                input_file_id=ask.input_file_id,
                completion_window=ask.completion_window,
                status="validating",
                created_at=now,
                expires_at=now + COMPLETION_WINDOW_S,
                metadata=ask.metadata,
            )
            await store.create(
                b.BatchRecord(
                    batch=batch,
                    owner=owner,
                    key_id=key.id,
                    key_hash=key.hash,
                    output_expires_s=outputs.seconds if outputs else None,
                )
            )
            return _ok(batch)
        except ApiError as exc:
            return error_response(exc)

    async def _owned(self, request: Request) -> tuple[b.BatchRecord, BatchStore]:
        _, owner, store = await self.caller(request)
        batch_id = request.path_params["batch_id"]
        found = await store.get(batch_id, owner)
        if found is None or b.is_message_batch(found[0].batch):
            raise NoSuchObject(f"No such Batch object: {batch_id}", param="batch_id")
        return found[0], store

    async def get(self, request: Request) -> Response:
        try:
            record, _ = await self._owned(request)
            return _ok(record.batch)
        except ApiError as exc:
            return error_response(exc)

    async def cancel(self, request: Request) -> Response:
        try:
            record, store = await self._owned(request)
            if record.batch.status in b.ENDED:
                raise Conflict(f"the batch is already {record.batch.status}", no_retry=True)
            updated = await store.update(record.batch.id, record.owner, b.cancelling)
            return _ok((updated or record).batch)
        except ApiError as exc:
            return error_response(exc)

    async def list(self, request: Request) -> Response:
        try:
            _, owner, store = await self.caller(request)
            limit = _page_size(request.query_params.get("limit"))
            mine = [r.batch for r in await store.records(owner) if not b.is_message_batch(r.batch)]
            after = request.query_params.get("after")
            at = pages.id_time(after, "batch_") if after else None
            return _ok(pages.page(mine, after, limit, cursor_at=at))
        except ApiError as exc:
            return error_response(exc)
