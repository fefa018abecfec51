"""How a batch's results are written: OpenAI's output and error files, or Anthropic's results.

The runner sends every batch's lines the same way; only the shape of what it records and the
files it writes at the end differ, by the batch's endpoint (:func:`for_endpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec

from switchyard.dialects.anthropic import batches as anthropic_batches
from switchyard.dialects.anthropic import error_body as anthropic_error_body
from switchyard.errors import ApiError
from switchyard.schemas import batches as b
from switchyard.schemas.openai import error_body

_JSON = msgspec.json.Encoder()
_RAW = msgspec.json.Decoder(msgspec.Raw)
_EXPIRED = (
    b'{"error":{"message":"the batch expired before this request ran",'
    b'"type":"invalid_request_error","code":"batch_expired"}}'
)


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished batch's files and counts: ``output`` is always written, ``errors`` when it
    has rows; ``completed`` and ``failed`` are the requests that succeeded and that failed."""

    output: list[bytes]
    errors: list[bytes]
    completed: int
    failed: int


class Format(Protocol):
    output_suffix: str
    output_purpose: str

    def error(self, exc: ApiError) -> bytes:
        """The body a line answered by ``exc`` records."""

    def line(self, batch_id: str, index: int, line: b.BatchLine, status: int, body: bytes) -> bytes:
        """A line's recorded result (``status`` and ``body``: its answer)."""

    def ok(self, result: bytes) -> bool:
        """Whether a recorded result is a success."""

    def finish(
        self, batch_id: str, lines: list[b.BatchLine], results: dict[int, bytes], final: str
    ) -> Finished:
        """The files and counts of a batch ending as ``final`` with these recorded results
        (line number -> result)."""


class OpenAIFormat:
    """OpenAI's Batch API: successes in the output file, failures in the error file, each line
    ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``."""

    output_suffix = "output"
    output_purpose = "batch_output"

    def error(self, exc: ApiError) -> bytes:
        return error_body(exc)

    def line(self, batch_id: str, index: int, line: b.BatchLine, status: int, body: bytes) -> bytes:
        doc = {
            "id": f"batch_req_{batch_id}_{index}",
            "custom_id": line.custom_id,
            "response": {
                "status_code": status,
                "request_id": f"{batch_id}:{index}",
                "body": _raw(body),
            },
            "error": None,
        }
        return _JSON.encode(doc)

    def ok(self, result: bytes) -> bool:
        return b'"status_code":2' in result

    def finish(
        self, batch_id: str, lines: list[b.BatchLine], results: dict[int, bytes], final: str
    ) -> Finished:
        good = [results[i] for i in sorted(results) if self.ok(results[i])]
        bad = [results[i] for i in sorted(results) if not self.ok(results[i])]
        if final == "expired":  # every line that did not run fails as expired
            for index, line in enumerate(lines, start=1):
                if index not in results:
                    bad.append(self.line(batch_id, index, line, 400, _EXPIRED))
        return Finished(good, bad, len(good), len(bad))


class MessagesFormat:
    """Anthropic's Message Batches: one results file, one line per request whatever became of
    it (see :mod:`switchyard.dialects.anthropic.batches`)."""

    output_suffix = "results"
    output_purpose = b.MESSAGE_BATCH_RESULTS

    def error(self, exc: ApiError) -> bytes:
        return anthropic_error_body(exc)

    def line(self, batch_id: str, index: int, line: b.BatchLine, status: int, body: bytes) -> bytes:
        return anthropic_batches.result_line(line.custom_id, status, body)

    def ok(self, result: bytes) -> bool:
        return anthropic_batches.succeeded(result)

    def finish(
        self, batch_id: str, lines: list[b.BatchLine], results: dict[int, bytes], final: str
    ) -> Finished:
        rows = [results[i] for i in sorted(results)]
        completed = sum(1 for row in rows if self.ok(row))
        unrun = "canceled" if final == "cancelled" else "expired"
        for index, line in enumerate(lines, start=1):
            if index not in results:
                rows.append(anthropic_batches.unrun_line(line.custom_id, unrun))
        # Requests that never ran are neither completed nor failed: the batch's final status
        # says what became of them (see anthropic_batches.request_counts).
        return Finished(rows, [], completed, len(results) - completed)


OPENAI = OpenAIFormat()
MESSAGES = MessagesFormat()


def for_endpoint(endpoint: str) -> Format:
    return MESSAGES if endpoint == b.MESSAGES_ENDPOINT else OPENAI


def _raw(body: bytes) -> msgspec.Raw:
    try:
        return _RAW.decode(body)
    except msgspec.DecodeError:
        return msgspec.Raw(_JSON.encode(body.decode("utf-8", "replace")))
