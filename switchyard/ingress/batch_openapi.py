"""The OpenAPI description of the Batch API's routes (``/v1/files``, ``/v1/batches``).

They are plain routes of the edge (:mod:`switchyard.ingress.batches`), so FastAPI does not
document them; :func:`switchyard.ingress.openapi.install` adds these paths, and with them the
HTTP fuzzer sends them generated requests like every other route. Objects are described from
the msgspec types the edge encodes and decodes (:mod:`switchyard.schemas.batches`), so the
document cannot drift from them.
"""

from __future__ import annotations

from typing import Any, Protocol

from switchyard.runtime.openapi import ERROR_SCHEMA, error_responses, inline_schema
from switchyard.schemas import batches as b

# Every Batch API call authenticates first (401), may meet the failed-authentication limit
# (429), and answers 503 while the edge is still starting.
_ALWAYS = (401, 429, 503)


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
    }


class Operation(Protocol):
    def __call__(
        self, summary: str, op_id: str, ok: dict[str, Any], errors: tuple[int, ...], **extra: Any
    ) -> dict[str, Any]: ...


def operations(
    security: list[dict[str, list[str]]], error_schema: dict[str, Any] = ERROR_SCHEMA
) -> Operation:
    """What describes one batch operation (tag ``batch``, the client-key ``security``): its
    200 response ``ok``, and its ``errors`` (with 401, 429 and 503, which every one of them can
    answer) in ``error_schema``."""

    def operation(
        summary: str, op_id: str, ok: dict[str, Any], errors: tuple[int, ...], **extra: Any
    ) -> dict[str, Any]:
        return {
            "summary": summary,
            "operationId": op_id,
            "tags": ["batch"],
            "security": security,
            "responses": {"200": ok, **error_responses((*errors, *_ALWAYS), error_schema)},
            **extra,
        }

    return operation


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _paging(most: int) -> list[dict[str, Any]]:
    """``limit`` (1 to ``most``) and ``after`` (the id of the previous page's last object)."""
    return [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": most}, "page size"),
        _query(
            "after",
            {"type": "string"},
            "the id of the last object of the previous page (deleted since: placed by its "
            "time; an id that cannot be placed is a 400)",
        ),
    ]


def batch_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """Path items for the Batch API; ``security``: the client-key schemes of the LLM API."""
    file = inline_schema(b.FileObject)
    batch = inline_schema(b.Batch)

    operation = operations(security)
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A JSONL file whose name ends in .jsonl",
                        },
                        "purpose": {"type": "string", "enum": ["batch"]},
                        # OpenAI's expiration policy, as the SDKs flatten it into the form.
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": b.EXPIRY_MIN_S,
                            "maximum": b.EXPIRY_MAX_S,
                        },
                    },
                }
            }
        },
    }
    create = {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(b.BatchCreate)}},
    }
    deleted = {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "deleted": {"type": "boolean"},
        },
    }
    content = {
        "description": "The file's bytes (JSONL)",
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    }
    return {
        "/v1/files": {
            "post": operation(
                "Upload a JSONL file of batch requests (purpose: batch)",
                "upload_file",
                json_response("The file", file),
                (400, 413),
                requestBody=upload,
            ),
            "get": operation(
                "The caller's files, newest first",
                "list_files",
                json_response("A page of files", _list_of(file)),
                (400,),
                parameters=[
                    _query(
                        "purpose",
                        {"type": "string"},
                        "batch or batch_output (OpenAI's other purposes list nothing; any "
                        "other is a 400)",
                    ),
                    _query("order", {"type": "string", "enum": ["asc", "desc"]}, "by creation"),
                    *_paging(10_000),
                ],
            ),
        },
        "/v1/files/{file_id}": {
            "get": operation(
                "One file",
                "get_file",
                json_response("The file", file),
                (404,),
                parameters=[_id("file_id")],
            ),
            "delete": operation(
                "Delete a file (409 while a batch that has not ended uses it)",
                "delete_file",
                json_response("Deleted", deleted),
                (404, 409),
                parameters=[_id("file_id")],
            ),
        },
        "/v1/files/{file_id}/content": {
            "get": operation(
                "A file's bytes", "file_content", content, (404,), parameters=[_id("file_id")]
            ),
        },
        "/v1/batches": {
            "post": operation(
                "Start a batch over an uploaded file",
                "create_batch",
                json_response("The batch", batch),
                (400,),
                requestBody=create,
            ),
            "get": operation(
                "The caller's batches, newest first",
                "list_batches",
                json_response("A page of batches", _list_of(batch)),
                (400,),
                parameters=_paging(100),
            ),
        },
        "/v1/batches/{batch_id}": {
            "get": operation(
                "One batch",
                "get_batch",
                json_response("The batch", batch),
                (404,),
                parameters=[_id("batch_id")],
            ),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": operation(
                "Cancel a batch (lines in flight end; 409 once it has ended)",
                "cancel_batch",
                json_response("The batch", batch),
                (404, 409),
                parameters=[_id("batch_id")],
            ),
        },
    }
