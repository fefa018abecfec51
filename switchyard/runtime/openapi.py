"""Pieces of OpenAPI documents shared by every HTTP surface (the LLM API, ``/admin/v1``).

Every error a client can see is OpenAI-shaped (:func:`switchyard.runtime.http.error_response`),
so every documented error response carries the one ``Error`` schema (inline, so a document
needs no shared component for it). Request bodies that are
decoded with msgspec types are documented from those same types (:func:`inline_schema`), so
the document cannot drift from what the decoder accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

# The OpenAI error shape, as :func:`switchyard.schemas.openai.error_body` writes it.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

# Anthropic's error shape, which its routes answer (switchyard.dialects.anthropic.errors).
ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}

_REASONS = {
    400: "Invalid request (body, parameter or header); `param` names the field",
    401: "Missing or invalid credential",
    403: "The credential may not do this (a model the key may not use)",
    404: "Unknown model, route, key or path",
    405: "Method not allowed on this path",
    409: "Conflict with the current state (compare-and-set lost, object in use)",
    413: "Request body too large",
    429: "Rate limit or budget reached, or too many failed authentications; see Retry-After",
    500: "Internal error (a bug: the process keeps serving)",
    502: "The provider failed",
    503: "No worker available, queue full, or the service is starting",
    504: "The request deadline passed",
}


def error_responses(
    statuses: Iterable[int], schema: dict[str, Any] = ERROR_SCHEMA
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``statuses``, each an OpenAI-shaped error (or of
    ``schema``: :data:`ANTHROPIC_ERROR_SCHEMA` on Anthropic's routes)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _REASONS.get(status, "Error"),
            "content": {"application/json": {"schema": schema}},
        }
        if status in (429, 503):
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying (when known)",
                    "schema": {"type": "string"},
                }
            }
        out[str(status)] = entry
    return out


def add_security_schemes(doc: dict[str, Any], schemes: dict[str, Any]) -> None:
    """Register security ``schemes`` in an OpenAPI document."""
    doc.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)


def inline_schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema msgspec derives for ``kind``, with every ``$ref`` resolved in place
    (so it can sit anywhere in an OpenAPI document; the types it serves are not recursive)."""
    root = msgspec.json.schema(kind)
    defs: dict[str, Any] = root.pop("$defs", {})

    def resolve(node: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise ValueError(f"recursive schema for {kind!r}")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = dict(defs[ref.removeprefix("#/$defs/")])
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**target, **extra}, depth + 1)
            return {k: resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth) for v in node]
        return node

    resolved: dict[str, Any] = resolve(root)
    return resolved
