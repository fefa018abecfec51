"""The end an edge writes to a Responses stream that fails after it began.

A stream the edge cuts itself (the request's deadline passed, the edge stops) or whose reply
ends in an error message (a native stream whose connection broke) ends as the model-proxy ends
a translated one (:meth:`~switchyard.dialects.responses.ResponsesStream.fail`): an ``error``
event, then ``response.failed``, numbered on from the last ``sequence_number`` the client got
(OpenAI's ``ResponseErrorEvent`` requires one). The failed Response is the one
``response.created`` opened the stream with (its id), marked failed with the error.

Nothing is decoded while the stream runs: the relay keeps the first and the last chunk it passed
on, and only an ending that needs them reads them.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import msgspec

from switchyard.dialects._common import encode, frame
from switchyard.dialects.responses._objects import error_object
from switchyard.errors import ApiError

_KEY = b'"sequence_number"'
_NUMBER = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_DOC = msgspec.json.Decoder(dict[str, Any])
# The events after which a Responses stream has nothing more to say.
_ENDS = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


def last_sequence(events: bytes) -> int | None:
    """The ``sequence_number`` of the last event in ``events`` (SSE frames) that has one."""
    at = events.rfind(_KEY)
    while at >= 0:
        found = _NUMBER.match(events, at)
        if found is not None:
            return int(found.group(1))
        at = events.rfind(_KEY, 0, at)
    return None


def opening_response(events: bytes) -> dict[str, Any] | None:
    """The Response of the ``response.created`` event in ``events``, if one is there."""
    if b"response.created" not in events:
        return None
    data: list[bytes] = []
    for line in [*events.splitlines(), b""]:
        if line.startswith(b"data:"):
            data.append(line[5:].strip())
        elif not line and data:  # the blank line that ends an event
            doc = _decoded(b"\n".join(data))
            data = []
            response = doc.get("response") if doc is not None else None
            if doc is not None and doc.get("type") == "response.created":
                return response if isinstance(response, dict) else None
    return None


def stream_failed(exc: ApiError, opening: bytes, relayed: bytes, *, model: str = "") -> bytes:
    """``error`` then ``response.failed`` for a stream that began with ``opening`` (its first
    chunk) and last relayed ``relayed``: numbered after the last number either carried.
    Nothing when ``relayed`` already ended the stream (its own ``response.failed``, say).

    A stream that relayed nothing yet (an edge started it before its first chunk, see
    ``ingress/stream_relay.py``) first gets a ``response.created`` of its own, for ``model``:
    OpenAI's SDK refuses an ``error`` that no ``response.created`` came before (its stream
    helper raises ``RuntimeError`` instead of the error)."""
    if any(end in relayed for end in _ENDS):
        return b""
    if not opening and not relayed:
        return _unopened_failed(exc, model)
    last = last_sequence(relayed)
    if last is None:
        last = last_sequence(opening)
    seq = -1 if last is None else last
    error = {
        "type": "error",
        "code": exc.code,
        "message": exc.message,
        "param": exc.param,
        "sequence_number": seq + 1,
    }
    response = dict(opening_response(opening) or {"object": "response", "output": []})
    response["status"] = "failed"
    response["error"] = error_object(exc.status, exc.message)
    failed = {"type": "response.failed", "response": response, "sequence_number": seq + 2}
    return frame("error", encode(error)) + frame("response.failed", encode(failed))


def _unopened_failed(exc: ApiError, model: str) -> bytes:
    """``response.created``, ``error``, ``response.failed`` for a Response nobody opened."""
    response: dict[str, Any] = {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
    }
    created = frame(
        "response.created",
        encode({"type": "response.created", "response": response, "sequence_number": 0}),
    )
    return created + stream_failed(exc, created, b"")


def _decoded(data: bytes) -> dict[str, Any] | None:
    try:
        return _DOC.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
