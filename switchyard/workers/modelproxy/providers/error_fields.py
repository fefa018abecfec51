"""What a provider's error answer says, however the server shaped it.

OpenAI's shape is ``{"error": {"message", "type", "param", "code"}}``, and servers that speak
its API word their errors their own way: vLLM sends ``code`` as the HTTP status (a number)
with its own ``type`` (``BadRequestError``), Azure's content filter ``"type": null``, older vLLM
and others the error object itself (``{"object": "error", "message": ...}``), some
``{"error": "text"}``, FastAPI-based servers ``{"detail": ...}``, and proxies plain text. The
message is what tells a client why its request failed (a context longer than the model's, a
filtered prompt): read from each of these, where a strict reading of OpenAI's shape replaced
it with "answered HTTP 400" and dropped Azure's ``content_filter`` code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

MAX_MESSAGE_CHARS = 2000  # a message longer than this is cut (a page of a stack trace)


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """What an error answer says: None for what it does not."""

    message: str | None = None
    code: str | None = None
    param: str | None = None
    plain: bool = False  # the message is a body's plain text, not an error document's field


def error_fields(data: bytes) -> ErrorFields:
    """The fields of an error answer's body (JSON in any of the shapes above, or plain text;
    an HTML page says nothing a client could use)."""
    try:
        doc = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        text = _plain_text(data)
        return ErrorFields(text, plain=text is not None)
    return fields_of(doc)


def fields_of(doc: Any) -> ErrorFields:
    """The fields of a decoded error document."""
    if not isinstance(doc, dict):
        return ErrorFields()
    error = doc.get("error")
    if isinstance(error, str):
        return ErrorFields(_clip(error))
    if isinstance(error, dict):
        fields: dict[str, Any] = error
    elif "message" in doc:  # the error object itself
        fields = doc
    elif "detail" in doc:  # FastAPI's {"detail": "..."} or its validation list
        return ErrorFields(_clip(_detail(doc["detail"])))
    else:
        return ErrorFields()
    message, code, param = fields.get("message"), fields.get("code"), fields.get("param")
    return ErrorFields(
        _clip(message) if isinstance(message, str) else None,
        code if isinstance(code, str) and code else None,  # a number is vLLM's HTTP status
        param if isinstance(param, str) and param else None,
    )


def _plain_text(data: bytes) -> str | None:
    text = data.decode("utf-8", "replace").strip()
    if not text or text.startswith("<"):  # nothing, or a page of markup
        return None
    return _clip(" ".join(text.split()))


def _detail(detail: Any) -> str:
    """FastAPI's detail: its text, or its validation list's messages (each entry also echoes
    the ``input`` it refused, the whole upstream body: never passed on)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        said = [d.get("msg") for d in detail if isinstance(d, dict)]
        return "; ".join(m for m in said if isinstance(m, str))
    return ""


def _clip(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."
