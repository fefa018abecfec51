"""The OpenAPI document of an edge: the LLM routes the raw-ASGI fast path serves, described.

FastAPI documents only the routes it serves itself, and the LLM POST routes never reach it
(:mod:`switchyard.ingress.fastpath`), nor do the plain routes the edge adds (models, health,
metrics). :func:`install` adds them to the app's document, generated from the fast path's own
route table so a new route cannot go undocumented (a unit test checks it). Request bodies are
described loosely but truthfully: the fields the edge reads, typed as its probe decoder
(:mod:`switchyard.schemas.openai`) requires them, everything else passed through to the
provider. Every error response is OpenAI-shaped, with the statuses the edge can answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from switchyard.ingress.batch_openapi import batch_paths
from switchyard.ingress.fastpath import ANTHROPIC_OPS, ROUTES
from switchyard.ingress.message_batch_openapi import message_batch_paths
from switchyard.runtime import forwarded
from switchyard.runtime.openapi import (
    ANTHROPIC_ERROR_SCHEMA,
    ERROR_SCHEMA,
    add_security_schemes,
    error_responses,
)

CLIENT_KEY_SCHEMES: dict[str, Any] = {
    "ClientKey": {"type": "http", "scheme": "bearer", "description": "A client key (sk-sy-...)"},
    "AzureApiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
    "XApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
_SECURITY: list[dict[str, list[str]]] = [{"ClientKey": []}, {"AzureApiKey": []}, {"XApiKey": []}]
# What an LLM POST can answer besides 200 (499 is only logged: the client is gone).
LLM_ERRORS = (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)

_MODEL = {"type": "string", "minLength": 1, "maxLength": 256}
_STREAM = {
    "stream": {"type": ["boolean", "null"], "description": "answer as server-sent events"},
    "stream_options": {
        "type": ["object", "null"],
        "properties": {"include_usage": {"type": "boolean"}},
    },
}
_OPTIONAL_INT = {"type": ["integer", "null"]}
# One server-sent event of a streamed answer (keep-alives are SSE comments, not events).
_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "a chunk (JSON), an OpenAI error (JSON) that ends the stream, or [DONE]",
        }
    },
}

_MESSAGES = {"type": "array", "minItems": 1, "items": {"type": "object"}}

BODIES: dict[str, dict[str, Any]] = {
    "chat": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": _MODEL,
            "messages": _MESSAGES,
            **_STREAM,
            "max_tokens": _OPTIONAL_INT,
            "max_completion_tokens": _OPTIONAL_INT,
        },
        "additionalProperties": True,
        "description": "An OpenAI chat completion request; other fields go to the provider.",
    },
    "complete": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": _MODEL,
            "prompt": {
                "anyOf": [{"type": "string"}, {"type": "array"}],
                "description": "a string, a list of strings or of token lists",
            },
            **_STREAM,
            "max_tokens": _OPTIONAL_INT,
        },
        "additionalProperties": True,
        "description": "A legacy completion request; other fields go to the provider.",
    },
    "responses": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": _MODEL,
            "input": {"description": "a string, or a list of input items"},
            "stream": _STREAM["stream"],
            "max_output_tokens": _OPTIONAL_INT,
        },
        "additionalProperties": True,
        "description": "An OpenAI Responses API request, served over chat completions.",
    },
    "messages": {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": _MODEL,
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": _MESSAGES,
            "stream": _STREAM["stream"],
        },
        "additionalProperties": True,
        "description": "An Anthropic Messages API request, served over chat completions.",
    },
    "count_tokens": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": _MODEL,
            "messages": _MESSAGES,
        },
        "additionalProperties": True,
        "description": (
            "An Anthropic Messages request without max_tokens: counted by Anthropic for its own"
            " deployments, estimated for every other provider."
        ),
    },
    "input_tokens": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": _MODEL,
            "input": {"description": "a string, or a list of input items"},
        },
        "additionalProperties": True,
        "description": (
            "An OpenAI Responses request to count: counted by OpenAI for its own deployments,"
            " estimated for every other provider."
        ),
    },
    "embed": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": _MODEL,
            "input": {
                "anyOf": [{"type": "string"}, {"type": "array"}],
                "description": "a string, a list of strings or of token lists",
            },
        },
        "additionalProperties": True,
        "description": "An embeddings request; other fields go to the provider.",
    },
}
_SUMMARIES = {
    "chat": "Create a chat completion (JSON, or server-sent events with stream: true)",
    "complete": "Create a completion (legacy; JSON, or server-sent events with stream: true)",
    "embed": "Create embeddings",
    "responses": "Create a response (OpenAI Responses API; its event stream with stream: true)",
    "messages": "Create a message (Anthropic Messages API; its event stream with stream: true)",
    "count_tokens": "Count the input tokens of a message (Anthropic Messages API)",
    "input_tokens": "Count the input tokens of a response request (OpenAI Responses API)",
}
_STREAMING = frozenset({"chat", "complete", "responses", "messages"})
_REQUEST_HEADERS = [
    {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": (
            "returned with a unique suffix (<yours>.<unique>) in x-request-id; replaced by a "
            "generated id unless 1-64 of [A-Za-z0-9._:-]"
        ),
        "schema": {"type": "string"},
    },
    {
        "name": "X-Request-Timeout",
        "in": "header",
        "required": False,
        "description": "the deadline in seconds (capped by ingress.max_deadline_s)",
        "schema": {"type": "string"},
    },
]
_REQUEST_ID = {
    "x-request-id": {"description": "the request's id", "schema": {"type": "string"}},
}


def _llm_operation(op: str, path: str) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if op in _STREAMING:
        ok["text/event-stream"] = {"schema": _EVENT}
    return {
        "summary": _SUMMARIES.get(op, f"The `{op}` operation"),
        "operationId": f"{op}{path.replace('/', '_').replace('-', '_')}",
        "tags": ["llm"],
        "security": _SECURITY,
        "parameters": _REQUEST_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": BODIES.get(op, {"type": "object", "required": ["model"]})
                }
            },
        },
        "responses": {
            "200": {"description": "The provider's answer", "content": ok, "headers": _REQUEST_ID},
            # /v1/messages answers errors in Anthropic's shape
            **error_responses(
                LLM_ERRORS, ANTHROPIC_ERROR_SCHEMA if op in ANTHROPIC_OPS else ERROR_SCHEMA
            ),
        },
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_MODEL_OBJECT = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
_MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": _MODEL_OBJECT}},
}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _plain_paths() -> dict[str, Any]:
    """The edge's routes added without FastAPI's documentation (models, health, metrics)."""
    models = {
        "summary": "Models this key may use",
        "description": (
            "OpenAI's list. A request with Anthropic's `anthropic-version` header (its SDKs send"
            " it) gets Anthropic's paged list instead (`data`, `has_more`, `first_id`,"
            " `last_id`; query `limit` 1-1000, default 20, and `after_id` or `before_id`), and"
            " its errors in Anthropic's shape; so does `GET /v1/models/{model}`."
        ),
        "tags": ["llm"],
        "security": _SECURITY,
        "responses": {
            "200": _json("The models", _MODEL_LIST),
            **error_responses((401, 429, 500, 503, 504)),
        },
    }
    paths: dict[str, Any] = {
        "/v1/models": {"get": {**models, "operationId": "list_models"}},
        "/models": {"get": {**models, "operationId": "list_models_unprefixed"}},
        "/v1/models/{model}": {
            "get": {
                "summary": "One model, if this key may use it",
                "operationId": "get_model",
                "tags": ["llm"],
                "security": _SECURITY,
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("The model", _MODEL_OBJECT),
                    **error_responses((401, 404, 429, 500, 503, 504)),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Alive",
                "operationId": "health",
                "tags": ["operations"],
                "responses": {"200": _json("Alive", _STATUS)},
            }
        },
        "/ready": {
            "get": {
                "summary": "Serving: NATS connected, key ring loaded, a head answers",
                "operationId": "ready",
                "tags": ["operations"],
                "responses": {
                    "200": _json("Ready", _STATUS),
                    "503": _json("Not ready (starting, or no head answers)", _STATUS),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this process",
                "operationId": "metrics",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return paths


def llm_paths() -> dict[str, Any]:
    """Path items for every route of the fast path, the edge's plain routes and the two batch
    APIs (OpenAI's and Anthropic's)."""
    paths: dict[str, Any] = {}
    for path, (op, _subject) in ROUTES.items():
        paths[path] = {"post": _llm_operation(op, path)}
    paths.update(_plain_paths())
    paths.update(batch_paths(_SECURITY))
    paths.update(message_batch_paths(_SECURITY))
    return paths


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the LLM API too (built once, on first request)."""
    base: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = base()
            doc["paths"] = {**llm_paths(), **doc.get("paths", {})}
            add_security_schemes(doc, CLIENT_KEY_SCHEMES)
        return app.openapi_schema or base()

    app.openapi = openapi  # type: ignore[method-assign]


def schema_endpoint(app: FastAPI) -> Callable[[Request], Awaitable[JSONResponse]]:
    """``GET /openapi.json``: ``app``'s document, whose server is the path prefix the client
    reached the edge under (``ingress.<edge>.root_path``), when there is one: Swagger UI's "Try
    it out" and clients generated from the document call under it. (FastAPI's own route reads
    ASGI's ``root_path``, which the edge does not set: see :mod:`switchyard.runtime.forwarded`.)"""

    async def schema(request: Request) -> JSONResponse:
        doc = app.openapi()
        prefix = forwarded.root_path(request)
        if prefix:
            doc = {**doc, "servers": [{"url": prefix}]}
        return JSONResponse(doc)

    return schema
