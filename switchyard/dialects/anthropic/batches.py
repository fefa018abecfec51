"""Anthropic's Message Batches in Switchyard's batch records: what goes in, what comes out.

A batch is created from ``{"requests": [{"custom_id", "params"}, ...]}`` (each ``params`` a
non-streaming Messages request). The edge stores those requests as the batch's input file, one
``POST /v1/messages`` line each, and the batch runner runs them like any batch line. Clients see
Anthropic's ``message_batch`` object, made here from the stored :class:`~switchyard.schemas.
batches.Batch`: ``processing_status`` ``in_progress``, ``canceling`` or ``ended``, and request
counts that stay ``processing`` until the batch ends, as Anthropic's do. Results are JSONL, one
``{"custom_id", "result"}`` per request, ``result`` being ``succeeded`` (with the message),
``errored`` (with Anthropic's error body), ``canceled`` or ``expired``.
"""

from __future__ import annotations

import codecs
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from switchyard.dialects._common import encode, invalid
from switchyard.schemas import batches as b

# Anthropic's limits on a batch: at most 100,000 requests, each custom_id 1-64 of these.
MAX_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ID_PREFIX = "msgbatch_"
_TALLIES = ("processing", "succeeded", "errored", "canceled", "expired")


class _Request(msgspec.Struct, frozen=True):
    custom_id: str
    params: msgspec.Raw  # copied into the input file as sent: never built into objects here


class _Params(msgspec.Struct, frozen=True):
    """The one field of a request's ``params`` the edge checks (the runner reads the rest)."""

    model: Any = None


class _Create(msgspec.Struct, frozen=True):
    requests: Annotated[list[_Request], msgspec.Meta(min_length=1, max_length=MAX_REQUESTS)]


class _Kind(msgspec.Struct, frozen=True):
    type: str


class _Outcome(msgspec.Struct, frozen=True):
    result: _Kind


_CREATE = msgspec.json.Decoder(_Create)
_PARAMS = msgspec.json.Decoder(_Params)
_MB = 1 << 20
_REST = b',"method":"POST","url":' + encode(b.MESSAGES_ENDPOINT) + b',"body":'
_OUTCOME = msgspec.json.Decoder(_Outcome)
_RAW = msgspec.json.Decoder(msgspec.Raw)
_UNREADABLE = encode(
    {"type": "error", "error": {"type": "api_error", "message": "the answer was not JSON"}}
)


def input_lines(body: bytes | bytearray) -> tuple[bytes, int]:
    """The batch input file for a create request's body, and its number of requests.

    Raises:
        InvalidRequest: not a create request (or nested too deeply to read); a ``custom_id``
            that is not 1-64 letters, digits, ``_`` or ``-``, or that appears twice; a request
            without ``params.model``.
    """
    try:
        return _input_lines(body)
    except RecursionError:  # the decoder skips nested values recursively: a 500 otherwise
        raise invalid("requests", "the body is nested too deeply to be read as JSON") from None


def _input_lines(body: bytes | bytearray) -> tuple[bytes, int]:
    if not _utf8(body):  # skipped over below, never decoded: checked here once
        raise invalid("requests", "the body is not valid UTF-8")
    # Line breaks between a request's tokens (pretty-printed JSON) would split its line.
    compact = b"\n" not in body and b"\r" not in body
    try:
        create = _CREATE.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid("requests", str(exc)) from None
    except msgspec.DecodeError:
        raise invalid("requests", "the body must be a JSON object with `requests`") from None
    seen: set[str] = set()
    out: list[bytes | msgspec.Raw] = []
    for index, request in enumerate(create.requests):
        where = f"requests.{index}"
        if not CUSTOM_ID.fullmatch(request.custom_id):
            raise invalid(
                f"{where}.custom_id",
                "must be 1 to 64 letters, digits, underscores or hyphens",
            )
        if request.custom_id in seen:
            raise invalid(
                f"{where}.custom_id",
                f"`{request.custom_id}` is the custom_id of more than one request",
            )
        seen.add(request.custom_id)
        try:
            model = _PARAMS.decode(request.params).model
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise invalid(f"{where}.params", "must be an object (a Messages request)") from None
        if not isinstance(model, str):
            raise invalid(f"{where}.params.model", "a model is required (a string)")
        # The line is made around the request's own JSON, copied once by the join: decoded
        # into objects and encoded again, 50,000 requests of 2 KB took 0.4-2.8 s of the edge's
        # event loop; this takes ~0.15 s.
        params = request.params if compact else msgspec.json.format(request.params, indent=-1)
        out += (b'{"custom_id":', encode(request.custom_id), _REST, params, b"}\n")
    return b"".join(out), len(create.requests)


def _utf8(body: bytes | bytearray) -> bool:
    """Whether ``body`` is valid UTF-8 (checked a megabyte at a time: no copy of it whole)."""
    if body.isascii():
        return True
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(body), _MB):
            decoder.decode(view[start : start + _MB])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _stamp(seconds: int | None) -> str | None:
    """An RFC 3339 time, as Anthropic writes them."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ended(batch: b.Batch) -> bool:
    return batch.status in b.ENDED


def request_counts(batch: b.Batch) -> dict[str, int]:
    """Anthropic's tallies: every request is ``processing`` until the batch ends, then each is
    succeeded, errored, canceled or expired (the sum is always the number of requests)."""
    counts = batch.request_counts
    if not ended(batch):
        return {
            "processing": counts.total,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
    # Requests without a result: never run because the batch was cancelled or expired
    # (or, for a batch that failed as a whole, not run at all: those count as errored).
    rest = max(0, counts.total - counts.completed - counts.failed)
    canceled = rest if batch.status == "cancelled" else 0
    expired = rest if batch.status == "expired" else 0
    return {
        "processing": 0,
        "succeeded": counts.completed,
        "errored": counts.failed + rest - canceled - expired,
        "canceled": canceled,
        "expired": expired,
    }


def batch_object(batch: b.Batch, base_url: str) -> dict[str, Any]:
    """Anthropic's ``message_batch`` object; ``base_url`` (``http://host:port``) makes its
    ``results_url``, given once the batch ended with results."""
    if ended(batch):
        status = "ended"
    else:
        status = "canceling" if batch.status == "cancelling" else "in_progress"
    results = None
    if ended(batch) and batch.output_file_id:
        results = f"{base_url}/v1/messages/batches/{batch.id}/results"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": request_counts(batch),
        "ended_at": _stamp(b.ended_at(batch)),
        "created_at": _stamp(batch.created_at),
        "expires_at": _stamp(batch.expires_at),
        "archived_at": None,
        "cancel_initiated_at": _stamp(batch.cancelling_at),
        "results_url": results,
    }


def result_line(custom_id: str, status: int, body: bytes) -> bytes:
    """One line of the results file: ``body`` is the message (2xx) or Anthropic's error body."""
    try:
        inner: msgspec.Raw | None = _RAW.decode(body)  # checks the JSON, builds nothing
    except (msgspec.DecodeError, RecursionError):
        inner = None
    if 200 <= status < 300 and inner is not None:
        result: dict[str, Any] = {"type": "succeeded", "message": inner}
    else:
        error = inner or msgspec.Raw(_UNREADABLE)
        result = {"type": "errored", "error": error}
    return encode({"custom_id": custom_id, "result": result})


def unrun_line(custom_id: str, kind: str) -> bytes:
    """The result of a request that never ran: ``canceled`` or ``expired``."""
    return encode({"custom_id": custom_id, "result": {"type": kind}})


def succeeded(result: bytes) -> bool:
    """Whether a recorded result line is a success."""
    try:
        return _OUTCOME.decode(result).result.type == "succeeded"
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return False


def deleted_body(batch_id: str) -> bytes:
    return encode({"id": batch_id, "type": "message_batch_deleted"})
