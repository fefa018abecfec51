"""An embeddings answer in the encoding its request asked for (``encoding_format``).

OpenAI answers ``"encoding_format": "base64"`` with each embedding as the base64 of its
little-endian float32 array, and ``"float"`` (the default) with a list of numbers. Its SDKs
rely on it: the Node SDK asks for base64 by default and decodes whatever comes back as base64,
so a list of floats returned to it becomes garbage without any error. Providers reached
through litellm and the built-in demo produce floats whatever was asked, so their answers are
encoded here. OpenAI-compatible providers get the field and their answer is passed through,
except that float lists a server sent although base64 was asked (servers that ignore the
field) are encoded here too (:func:`base64_answer`).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

import msgspec

from switchyard.errors import InvalidRequest

FORMATS = ("float", "base64")


def requested(body: dict[str, Any]) -> str:
    """The encoding ``body`` asks for: ``float`` (also when absent or null) or ``base64``.

    Raises:
        InvalidRequest: any other value (checked before the provider is called, as OpenAI
            refuses it).
    """
    wanted = body.get("encoding_format")
    if wanted is None:
        return "float"
    if wanted not in FORMATS:
        raise InvalidRequest(
            f"`encoding_format` must be 'float' or 'base64', not {str(wanted)[:40]!r}",
            param="encoding_format",
            code="invalid_value",
        )
    return str(wanted)


def encoded(doc: dict[str, Any], wanted: str) -> dict[str, Any]:
    """``doc`` (an embeddings list answer) with every embedding in the ``wanted`` encoding.

    A list of numbers becomes base64 when base64 was asked for; a base64 string a provider
    returned anyway becomes a list of floats when floats were asked for. What is already in
    the wanted form, or cannot be read as either, is left as it came.
    """
    for item in doc.get("data") or ():
        if not isinstance(item, dict):
            continue
        vector = item.get("embedding")
        if wanted == "base64" and isinstance(vector, list):
            item["embedding"] = to_base64(vector)
        elif wanted == "float" and isinstance(vector, str):
            floats = from_base64(vector)
            if floats is not None:
                item["embedding"] = floats
    return doc


# An embedding given as a list (``"embedding": [``): what a server that ignored base64 sends.
_LISTED = re.compile(rb'"embedding"\s*:\s*\[')


def base64_answer(answer: bytes) -> bytes:
    """``answer``, the JSON of an embeddings answer to a request that asked for base64, with
    any embedding the server sent as a list of floats anyway in base64. An answer without such
    a list (the server honoured the field) is returned as it is, without being decoded; so is
    one that is not a JSON object."""
    if _LISTED.search(answer) is None:
        return answer
    try:
        doc = msgspec.json.decode(answer)
    except msgspec.DecodeError:
        return answer
    if not isinstance(doc, dict):
        return answer
    return msgspec.json.encode(encoded(doc, "base64"))


def to_base64(vector: list[Any]) -> str | list[Any]:
    """The base64 of ``vector`` as little-endian float32, or ``vector`` itself when it holds
    something that is not a number (nothing sensible to encode)."""
    try:
        packed = struct.pack(f"<{len(vector)}f", *vector)
    except (struct.error, TypeError, OverflowError):  # beyond float32: left as floats
        return vector
    return base64.b64encode(packed).decode("ascii")


def from_base64(text: str) -> list[float] | None:
    """The floats of a base64 little-endian float32 array, or None if ``text`` is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 4:
        return None
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
