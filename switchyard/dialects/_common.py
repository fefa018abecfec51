"""What every dialect translator shares: one JSON codec, request walking, ids and SSE frames.

Requests arrive as bytes (the edge) or as an already decoded dict (the model-proxy), so every
entry point accepts both and decodes at most once. Request bodies are walked as plain dicts rather
than typed structs because their items are open unions (a Responses input message may omit its
``type`` tag, new item types appear every month) and each refusal must name the exact field at
fault (``input[3].content[0].file_id``), which a hand walk gives for free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from switchyard.errors import InvalidRequest
from switchyard.schemas.openai import decode_body

ENCODER = msgspec.json.Encoder()
encode = ENCODER.encode
_DECODER = msgspec.json.Decoder()

Body = bytes | Mapping[str, Any]


def decode_object(body: Body) -> Mapping[str, Any]:
    """The request body as a mapping.

    Raises:
        InvalidRequest: not JSON, or not a JSON object.
    """
    if isinstance(body, dict | Mapping):  # dict first: the ABC check is slow
        return body
    obj = decode_body(_DECODER, body)
    if not isinstance(obj, dict):
        raise InvalidRequest("request body must be a JSON object")
    return obj


def new_id(prefix: str) -> str:
    """A fresh identifier such as ``resp_9f0c...`` (24 hex digits, like the providers' own)."""
    return prefix + os.urandom(12).hex()


def frame(event: str, data: bytes) -> bytes:
    """One named server-sent event: ``event: <event>\\ndata: <json>\\n\\n``."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def invalid(param: str, message: str, *, code: str | None = None) -> InvalidRequest:
    """A 400 naming the request field at fault."""
    return InvalidRequest(message, param=param, code=code)


def unsupported(param: str, message: str) -> InvalidRequest:
    """A 400 for a field Switchyard understands but does not offer (``unsupported_parameter``)."""
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def unsupported_value(param: str, message: str) -> InvalidRequest:
    """A 400 for a value of a field Switchyard cannot translate (``unsupported_value``)."""
    return InvalidRequest(message, param=param, code="unsupported_value")


def require(obj: Mapping[str, Any], key: str, path: str) -> Any:
    """``obj[key]``, or a 400 saying the field is required."""
    value = obj.get(key)
    if value is None:
        where = f"{path}.{key}" if path else key
        raise invalid(where, f"{where}: Field required", code="missing_required_parameter")
    return value


def expect_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise invalid(param, f"{param}: expected a string, got {_kind(value)}")
    return value


def expect_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(param, f"{param}: expected an array, got {_kind(value)}")
    return value


def expect_obj(value: Any, param: str) -> Mapping[str, Any]:
    # JSON objects decode to dicts; checking for dict avoids the Mapping ABC's slow path.
    if not isinstance(value, dict):
        raise invalid(param, f"{param}: expected an object, got {_kind(value)}")
    return value


def expect_number(value: Any, param: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(param, f"{param}: expected a number, got {_kind(value)}")
    return value


def expect_int(value: Any, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(param, f"{param}: expected an integer, got {_kind(value)}")
    return value


def expect_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(param, f"{param}: expected a boolean, got {_kind(value)}")
    return value


def text_content(texts: list[str]) -> str | list[dict[str, str]]:
    """Chat ``content`` for text-only parts: a plain string when there is one part.

    One part becomes a string because every OpenAI-compatible server accepts that; several stay
    separate parts (valid chat, and lossless) rather than being glued with a guessed separator.
    """
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": t} for t in texts]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"
