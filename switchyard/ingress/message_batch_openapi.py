"""The OpenAPI description of Anthropic's Message Batches routes (``/v1/messages/batches``).

Plain routes of the edge (:mod:`switchyard.ingress.message_batches`), added to the document by
:func:`switchyard.ingress.openapi.install` so the HTTP fuzzer sends them generated requests too.
Their errors are Anthropic-shaped.
"""

from __future__ import annotations

from typing import Any

from switchyard.dialects.anthropic.batches import MAX_REQUESTS
from switchyard.dialects.anthropic.paging import MAX_LIMIT
from switchyard.ingress.batch_openapi import json_response, operations
from switchyard.runtime.openapi import ANTHROPIC_ERROR_SCHEMA

_STAMP = {"type": "string", "format": "date-time"}
_STAMP_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_COUNTS = {
    "type": "object",
    "required": ["processing", "succeeded", "errored", "canceled", "expired"],
    "properties": {
        name: {"type": "integer", "minimum": 0}
        for name in ("processing", "succeeded", "errored", "canceled", "expired")
    },
}
BATCH: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "type",
        "processing_status",
        "request_counts",
        "created_at",
        "expires_at",
        "ended_at",
        "archived_at",
        "cancel_initiated_at",
        "results_url",
    ],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message_batch"},
        "processing_status": {"type": "string", "enum": ["in_progress", "canceling", "ended"]},
        "request_counts": _COUNTS,
        "created_at": _STAMP,
        "expires_at": _STAMP,
        "ended_at": _STAMP_OR_NULL,
        "archived_at": _STAMP_OR_NULL,
        "cancel_initiated_at": _STAMP_OR_NULL,
        "results_url": {"type": ["string", "null"]},
    },
}
_CREATE = {
    "type": "object",
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_REQUESTS,
            "items": {
                "type": "object",
                "required": ["custom_id", "params"],
                "properties": {
                    "custom_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "params": {
                        "type": "object",
                        "required": ["model", "max_tokens", "messages"],
                        "description": "a Messages API request (POST /v1/messages), not streamed",
                    },
                },
            },
        }
    },
}
_PAGE = {
    "type": "object",
    "required": ["data", "has_more", "first_id", "last_id"],
    "properties": {
        "data": {"type": "array", "items": BATCH},
        "has_more": {"type": "boolean"},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
    },
}
_DELETED = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {"id": {"type": "string"}, "type": {"const": "message_batch_deleted"}},
}
_RESULTS = {
    "description": "One JSON line per request: {custom_id, result: {type: succeeded | errored "
    "| canceled | expired, ...}}",
    "content": {"application/x-jsonl": {"schema": {"type": "string"}}},
}


_BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGING = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
    {"name": "after_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "before_id", "in": "query", "required": False, "schema": {"type": "string"}},
]


def message_batch_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """Path items for ``/v1/messages/batches``; ``security``: the LLM API's key schemes."""

    operation = operations(security, ANTHROPIC_ERROR_SCHEMA)
    return {
        "/v1/messages/batches": {
            "post": operation(
                "Create a message batch (Anthropic Message Batches API)",
                "create_message_batch",
                json_response("The batch", BATCH),
                (400, 413),
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _CREATE}},
                },
            ),
            "get": operation(
                "The caller's message batches, newest first",
                "list_message_batches",
                json_response("A page of batches", _PAGE),
                (400,),
                parameters=_PAGING,
            ),
        },
        "/v1/messages/batches/{batch_id}": {
            "get": operation(
                "One message batch",
                "get_message_batch",
                json_response("The batch", BATCH),
                (404,),
                parameters=[_BATCH_ID],
            ),
            "delete": operation(
                "Delete an ended message batch and its results (409 while it is processing)",
                "delete_message_batch",
                json_response("Deleted", _DELETED),
                (404, 409),
                parameters=[_BATCH_ID],
            ),
        },
        "/v1/messages/batches/{batch_id}/cancel": {
            "post": operation(
                "Cancel a message batch (409 once it has ended)",
                "cancel_message_batch",
                json_response("The batch", BATCH),
                (404, 409),
                parameters=[_BATCH_ID],
            ),
        },
        "/v1/messages/batches/{batch_id}/results": {
            "get": operation(
                "The results of an ended message batch (409 while it is processing)",
                "message_batch_results",
                _RESULTS,
                (404, 409),
                parameters=[_BATCH_ID],
            ),
        },
    }
