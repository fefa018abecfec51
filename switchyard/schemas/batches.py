"""The OpenAI Batch API's objects, as the edges answer them and as they are stored.

Files live in the ``sy_files`` object store (content) with a :class:`FileRecord` in
``sy_batches`` (``f.<owner>.<file id>``); batches are :class:`BatchRecord`\\ s in ``sy_batches``
(``b.<owner>.<batch id>``), where ``<owner>`` is :func:`owner_token` of the record's owner, so
one tenant's list reads only its own keys; each line's result is one entry of ``sy_batch_lines``
(``<batch id>.<line number>``), created once. All in the CLIENT account. The OpenAI shapes
(:class:`FileObject`, :class:`Batch`) are what clients see; the records add who owns them.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Annotated, Any, Literal

import msgspec

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
# Statuses the runner still has work for.
ACTIVE: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# Endpoints a batch may target, and the NATS operation each maps to.
ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "complete",
    "/v1/embeddings": "embed",
    "/v1/responses": "responses",
}
# Anthropic's Message Batches (``/v1/messages/batches``) run on the same runner: their
# requests are stored as an input file of lines for this endpoint, which only they may target.
MESSAGES_ENDPOINT = "/v1/messages"
RUNNABLE: dict[str, str] = {**ENDPOINTS, MESSAGES_ENDPOINT: "messages"}
# The files of a message batch are the batch's own: ``/v1/files`` neither lists nor serves them.
MESSAGE_BATCH_INPUT = "message_batch_input"
MESSAGE_BATCH_RESULTS = "message_batch_results"
HIDDEN_PURPOSES: frozenset[str] = frozenset({MESSAGE_BATCH_INPUT, MESSAGE_BATCH_RESULTS})
FILE_PREFIX = "f."
BATCH_PREFIX = "b."
# ``sy_batches`` / ``runner.leader``: the batch runner that may run batches now, and until when
# (a FeederLease record: switchyard/runtime/lease.py). Neither a file's nor a batch's key.
RUNNER_LEASE_KEY = "runner.leader"
# OpenAI's bounds for a file's ``expires_after.seconds``: one hour to thirty days.
EXPIRY_MIN_S = 3600
EXPIRY_MAX_S = 30 * 86400
# OpenAI's bounds for a batch's ``metadata``: pairs, and characters in a key and in a value.
METADATA_PAIRS = 16
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
# The time stamp each final status sets: a finished batch's record ages from it.
ENDED_AT: dict[str, str] = {
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelled": "cancelled_at",
}
ENDED: frozenset[str] = frozenset(ENDED_AT)
# What a cancel can still stop (``finalizing`` is writing the results; ``cancelling`` is
# stopping already).
CANCELLABLE: frozenset[str] = frozenset({"validating", "in_progress"})


# What a file or batch id can be (ours are `file-<nuid>`, `batch_<nuid>`): anything else is
# no such object, never a key lookup (a KV key cannot hold every character a path can).
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_id(value: str) -> bool:
    """Whether ``value`` can be a file or batch id (and so part of a record's key)."""
    return _ID.fullmatch(value) is not None


def owner_token(owner: str) -> str:
    """The owner's part of a record's key: a digest, because a team name may hold characters
    a key cannot (two owners sharing one would only share a list's read, never a record: every
    read still checks the record's ``owner``)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


def owned_key(prefix: str, owner: str, object_id: str) -> str:
    """Where a file (:data:`FILE_PREFIX`) or batch (:data:`BATCH_PREFIX`) record is stored."""
    return f"{prefix}{owner_token(owner)}.{object_id}"


def legacy_key(prefix: str, object_id: str) -> str:
    """Where records written before owner keys (up to 2026-12) are, until the batch runner's
    sweep moves them."""
    return prefix + object_id


def id_of(key: str) -> str:
    """The file or batch id a record's key ends with (either layout)."""
    return key.rsplit(".", 1)[1]


def is_legacy(key: str) -> bool:
    return key.count(".") == 1


class FileObject(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: str = "file"
    status: str = "processed"
    expires_at: int | None = None


def file_gone(file: FileObject, now: float) -> bool:
    """True once a file's ``expires_at`` has passed: callers no longer see it, and the batch
    runner deletes it (unless a batch that has not ended still uses it)."""
    return file.expires_at is not None and now >= file.expires_at


class FileRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A file and whose it is (the fair-share tenant: the team, else the key)."""

    file: FileObject
    owner: str


class RequestCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchErrorItem(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct, frozen=True, kw_only=True):
    data: list[BatchErrorItem]
    object: str = "list"


class InputTokensDetails(msgspec.Struct, frozen=True, kw_only=True):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, frozen=True, kw_only=True):
    reasoning_tokens: int = 0


class BatchUsage(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's ``usage`` of a batch: the tokens of its lines' answers, summed."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int = 0


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's batch object. ``model``: the model its lines name (None until its input was
    read, or when its lines name different models); ``usage``: the sum over its lines'
    answers (None until a line has one)."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    object: str = "batch"
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = RequestCounts()
    metadata: dict[str, str] | None = None
    model: str | None = None
    usage: BatchUsage | None = None


class BatchRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A batch, the key it is billed to, and how often a runner (re)started it.

    ``generation`` makes each restart's attempts distinct on the bus, so a line resubmitted
    after a restart is not mistaken for the lost submission it replaces.
    ``output_expires_s``: the output and error files expire this long after they are written
    (the caller's ``output_expires_after``; None: ``batch.file_expiry_s``).
    """

    batch: Batch
    owner: str
    key_id: str
    key_hash: str
    generation: int = 0
    output_expires_s: int | None = None


def is_message_batch(batch: Batch) -> bool:
    """An Anthropic Message Batch (served under ``/v1/messages/batches``, not ``/v1/batches``)."""
    return batch.endpoint == MESSAGES_ENDPOINT


def ended_at(batch: Batch) -> int | None:
    """When a batch reached its final status (None while it has not)."""
    stamp = ENDED_AT.get(batch.status)
    return getattr(batch, stamp) if stamp else None


def cancelling(record: BatchRecord) -> BatchRecord | None:
    """A batch record asked to stop (None: it is past stopping or already stopping). The runner
    stops sending its lines and ends it as ``cancelled``. The tenant's cancel (both Batch APIs)
    and the management API's write it."""
    if record.batch.status not in CANCELLABLE:
        return None
    batch = msgspec.structs.replace(
        record.batch, status="cancelling", cancelling_at=int(time.time())
    )
    return msgspec.structs.replace(record, batch=batch)


class BatchLine(msgspec.Struct, frozen=True, kw_only=True):
    """One input line (``/v1/batches`` JSONL); an empty ``custom_id`` is refused as a
    missing one is (it could not tell the line's row from another's)."""

    custom_id: Annotated[str, msgspec.Meta(min_length=1)]
    method: str
    url: str
    body: dict[str, Any]


class ExpiresAfter(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's expiration policy: ``seconds`` after the file's ``created_at``."""

    anchor: Literal["created_at"]
    seconds: Annotated[int, msgspec.Meta(ge=EXPIRY_MIN_S, le=EXPIRY_MAX_S)]


class BatchCreate(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/batches``; ``completion_window`` is required, as at OpenAI (a default let a
    client that forgot it believe any window was accepted)."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: ExpiresAfter | None = None


FILE_RECORD = msgspec.json.Decoder(FileRecord)
BATCH_RECORD = msgspec.json.Decoder(BatchRecord)
BATCH_LINE = msgspec.json.Decoder(BatchLine)
BATCH_CREATE = msgspec.json.Decoder(BatchCreate)
ENCODER = msgspec.json.Encoder()
