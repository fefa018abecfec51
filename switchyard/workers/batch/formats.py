"""How a batch's results are written: OpenAI's output and error files, or Anthropic's results.

The runner sends every batch's lines the same way; only the shape of what it records and the
files it writes at the end differ, by the batch's endpoint (:func:`for_endpoint`).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from switchyard.dialects.anthropic import batches as anthropic_batches
from switchyard.dialects.anthropic import error_body as anthropic_error_body
from switchyard.errors import ApiError
from switchyard.schemas import batches as b
from switchyard.schemas.openai import error_body, openai_status

_JSON = msgspec.json.Encoder()
_RAW = msgspec.json.Decoder(msgspec.Raw)
# A line the batch never ran before it expired: as OpenAI writes it, no response and the
# error at the top of the row (not an HTTP answer's body).
_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


class Format(Protocol):
    output_suffix: str
    output_purpose: str
    # Whether failed requests go to a file of their own (OpenAI's error file).
    errors_apart: bool
    # Whether a request that never ran counts as failed (OpenAI) or as neither (Anthropic:
    # the batch's final status says what became of it).
    unrun_fails: bool
    # Whether the batch object shows its lines' summed token ``usage`` (OpenAI's does).
    sums_usage: bool

    def error(self, exc: ApiError) -> bytes:
        """The body a line answered by ``exc`` records."""

    def line(self, batch_id: str, index: int, line: b.BatchLine, status: int, body: bytes) -> bytes:
        """A line's recorded result (``status`` and ``body``: its answer)."""

    def ok(self, result: bytes) -> bool:
        """Whether a recorded result is a success."""

    def unrun(self, batch_id: str, index: int, line: b.BatchLine, final: str) -> bytes | None:
        """The row of a line that never ran in a batch ending as ``final`` (None: no row)."""


class OpenAIFormat:
    """OpenAI's Batch API: successes in the output file, failures in the error file, each line
    ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``;
    a line an expired batch never ran has ``"response": null`` and ``"error": {"code":
    "batch_expired", "message"}``."""

    output_suffix = "output"
    output_purpose = "batch_output"
    errors_apart = True
    unrun_fails = True
    sums_usage = True

    def error(self, exc: ApiError) -> bytes:
        return error_body(exc)

    def line(self, batch_id: str, index: int, line: b.BatchLine, status: int, body: bytes) -> bytes:
        doc = {
            "id": f"batch_req_{batch_id}_{index}",
            "custom_id": line.custom_id,
            "response": {
                "status_code": openai_status(status),  # (Anthropic's 529 is no OpenAI status)
                "request_id": f"{batch_id}:{index}",
                "body": _raw(body),
            },
            "error": None,
        }
        return _JSON.encode(doc)

    def ok(self, result: bytes) -> bool:
        return b'"status_code":2' in result

    def unrun(self, batch_id: str, index: int, line: b.BatchLine, final: str) -> bytes | None:
        if final != "expired":  # a cancelled batch's unrun lines have no row
            return None
        doc = {
            "id": f"batch_req_{batch_id}_{index}",
            "custom_id": line.custom_id,
            "response": None,
            "error": _EXPIRED,
        }
        return _JSON.encode(doc)


class MessagesFormat:
    """Anthropic's Message Batches: one results file, one line per request whatever became of
    it (see :mod:`switchyard.dialects.anthropic.batches`)."""

    output_suffix = "results"
    output_purpose = b.MESSAGE_BATCH_RESULTS
    errors_apart = False
    unrun_fails = False
    sums_usage = False

    def error(self, exc: ApiError) -> bytes:
        return anthropic_error_body(exc)

    def line(self, batch_id: str, index: int, line: b.BatchLine, status: int, body: bytes) -> bytes:
        return anthropic_batches.result_line(line.custom_id, status, body)

    def ok(self, result: bytes) -> bool:
        return anthropic_batches.succeeded(result)

    def unrun(self, batch_id: str, index: int, line: b.BatchLine, final: str) -> bytes | None:
        kind = "canceled" if final == "cancelled" else "expired"
        return anthropic_batches.unrun_line(line.custom_id, kind)


class Assembly:
    """Sorts a finished batch's recorded results into its files one at a time, as they are
    read (the runner never holds every result at once), then gives the rows of the lines that
    never ran. Rows come in the order the results were recorded, as both vendors allow
    (their files are matched to requests by ``custom_id``, not by order)."""

    def __init__(
        self, fmt: Format, batch_id: str, total: int, final: str, refused: ApiError | None = None
    ) -> None:
        self._fmt = fmt
        self._batch_id = batch_id
        self._total = total
        self._final = final
        # Why the lines that never ran were refused (their key was revoked or deleted): each
        # gets the row of a line answered with this error. None: the final status decides.
        self._refused = refused
        self._seen: set[int] = set()
        self.completed = 0
        self.failed = 0

    def result(self, index: int, result: bytes) -> tuple[bool, bytes] | None:
        """Where a recorded result goes: (to the error file, row); None for a line it has
        seen already or that the batch does not have."""
        if index in self._seen or not 1 <= index <= self._total:
            return None
        self._seen.add(index)
        ok = self._fmt.ok(result)
        if ok:
            self.completed += 1
        else:
            self.failed += 1
        return (not ok and self._fmt.errors_apart), result

    @property
    def every_line_answered(self) -> bool:
        """Whether no line is left without a result (then :meth:`unrun` gives nothing)."""
        return len(self._seen) >= self._total

    def unrun(self, index: int, line: b.BatchLine) -> tuple[bool, bytes] | None:
        """Where the row of line ``index`` goes when no result was given for it, and the row
        (call it for each line once every result is in); None for a line with a result."""
        if index in self._seen:
            return None
        if self._refused is not None:
            body = self._fmt.error(self._refused)
            self.failed += 1
            refused = self._fmt.line(self._batch_id, index, line, self._refused.status, body)
            return self._fmt.errors_apart, refused
        row = self._fmt.unrun(self._batch_id, index, line, self._final)
        if row is None:
            return None
        if self._fmt.unrun_fails:
            self.failed += 1
        return self._fmt.errors_apart, row


OPENAI = OpenAIFormat()
MESSAGES = MessagesFormat()


def for_endpoint(endpoint: str) -> Format:
    return MESSAGES if endpoint == b.MESSAGES_ENDPOINT else OPENAI


def _raw(body: bytes) -> msgspec.Raw:
    try:
        return _RAW.decode(body)
    except msgspec.DecodeError:
        return msgspec.Raw(_JSON.encode(body.decode("utf-8", "replace")))
