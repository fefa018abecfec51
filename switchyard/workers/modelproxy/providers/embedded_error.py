"""The provider's own error, read out of the text litellm wraps it in.

litellm reports a provider's refusal as one string: its exception class, the provider's name
and the provider's answer as it received it, often the repr of the response bytes
(``AnthropicException - b'{"type": "error", "error": {...}}'``). Passed on whole, a client read
Python reprs and litellm's internals instead of the provider's sentence. When the text embeds a
JSON error in OpenAI's shape (``{"error": {"message", "param"?}}``) or Anthropic's
(``{"type": "error", "error": {"message"}}``), the provider's message (and ``param``) is what
the client gets; anything else is left as it was.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

# litellm's provider tag before the provider's answer ("AnthropicException - ").
_TAG = re.compile(r"^\s*\w+(?:Exception|Error)\s+-\s+")
# The repr of bytes around a JSON document: b'...' (or b"...").
_BYTES_REPR = re.compile(r"""^b(['"]).*\1$""", re.DOTALL)


def provider_error(text: str) -> tuple[str, str | None]:
    """``text`` without litellm's provider tag, or the embedded error's message, and the
    ``param`` it names (None when it names none)."""
    bare = _TAG.sub("", text, count=1)
    start, end = bare.find("{"), bare.rfind("}")
    if start < 0 or end <= start:
        return bare, None
    doc = _json(bare[start : end + 1])
    if doc is None and start >= 2 and _BYTES_REPR.match(bare[start - 2 : end + 2]):
        doc = _bytes_json(bare[start - 2 : end + 2])
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return bare, None
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        return bare, None
    param = error.get("param")
    return message.strip(), param if isinstance(param, str) and param else None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _bytes_json(literal: str) -> Any:
    """The JSON document a bytes repr (``b'{...}'``) holds, escapes undone."""
    try:
        raw = ast.literal_eval(literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return _json(raw.decode("utf-8", "replace")) if isinstance(raw, bytes) else None
