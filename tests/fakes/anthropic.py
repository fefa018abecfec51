"""A fake Anthropic Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) on a
free loopback port.

Speaks the real wire format: the JSON message object, the SSE event sequence (message_start,
content_block_start, ping, content_block_delta..., content_block_stop, message_delta with usage,
message_stop) and the ``{"type": "error", "error": {...}}`` error body. What it does is chosen by
the requested model:

``ok``            answers normally (streamed or not)
``gated``         streams the first delta, then waits for :attr:`FakeAnthropic.gate`
``murmurs``       streams the first delta, then only SSE comments (``: keep-alive``), one every
                  0.3 s, for 20 s (a stalled provider behind a proxy that keeps the line up)
``rate-limited``  429 ``rate_limit_error`` with ``retry-after: 2``
``overloaded``    529 ``overloaded_error``
``broken``        500 ``api_error``
``refused``       400 ``invalid_request_error`` saying :data:`REFUSED`
``slow``          waits 2 s, then answers normally
``html``          200 with an HTML page (a proxy in front of it)
``leaky``         401 whose message echoes the ``x-api-key`` it received (tests redaction)
``cut``           streams message_start and the first delta, then closes (no message_stop)
``dropped``       streams message_start and the first delta, then drops the connection (the
                  chunked body never ends); not streamed, drops it before answering
``empty``         answers 200 to a stream and closes before its first event
``stream-overloaded``  answers 200 to a stream whose first event is an ``error``
                  (``overloaded_error``), as Anthropic does when overloaded
``stream-api-error``  streams message_start and a ping, then an ``error`` (``api_error``)
``stream-invalid``  answers 200 to a stream whose first event is an ``error``
                  (``invalid_request_error``)
``stream-late-error``  streams message_start and the first delta, then an ``error``
                  (``overloaded_error``)
``stream-late-api-error``, ``stream-late-invalid``  the same with ``api_error``, or
                  ``invalid_request_error``
``tools``         answers a text block, then two ``tool_use`` blocks (:data:`TOOL_CALLS`),
                  ``stop_reason: "tool_use"``; streamed, each call's input comes in pieces
``thinks``        answers a ``thinking`` block (:data:`THOUGHT`, signed), then the text
``thinks-tools``  the same, then the calls of ``tools``
``claude-sonnet-4-5``  answers normally, reporting a prompt-cache hit: :data:`CACHED_USAGE`
``claude-sonnet-4-5-20250929``  the same with a cache write too: :data:`CACHE_WRITE_USAGE`
                  (real model names, so litellm's price map prices them)

A request with a ``web_search_*`` server tool reports that tool's ``max_uses`` (default 1)
searches, as ``usage.server_tool_use.web_search_requests`` (in a stream: 0 in message_start, the
count in message_delta, as Anthropic does).

A request with ``thinking`` enabled whose last assistant turn calls a tool is refused (400) unless
that turn starts with a ``thinking`` block, as Anthropic refuses it (a client must send back the
thinking that preceded its calls).

A token count answers ``COUNTED + (number of messages)`` for ``ok`` and the same errors for the
others, so a test can tell Anthropic's count from the gateway's own estimate.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer

REPLY = ("Hello", " from", " fake", " Anthropic.")
INPUT_TOKENS = 11
OUTPUT_TOKENS = 7
COUNTED = 4000
# Reported by the cache modes: a prompt mostly read from Anthropic's prompt cache, as in
# ``"usage": {"input_tokens": 10, "cache_read_input_tokens": 100000, "output_tokens": 10}``.
CACHED_USAGE = {"input_tokens": 10, "cache_read_input_tokens": 100000, "output_tokens": 10}
CACHE_WRITE_USAGE = {**CACHED_USAGE, "cache_creation_input_tokens": 1000}
_CACHE_MODES = {"claude-sonnet-4-5": CACHED_USAGE, "claude-sonnet-4-5-20250929": CACHE_WRITE_USAGE}
# What the ``tools`` model calls: (id, name, its input as the pieces it streams in).
TOOL_CALLS = (
    ("toolu_fake01", "get_weather", ('{"city": ', '"Paris"}')),
    ("toolu_fake02", "get_time", ('{"zone": ', '"CET"}')),
)
# What the ``thinks`` models think before they answer, and the models that call tools.
THOUGHT = ("Let me", " think.")
SIGNATURE = "sig-fake"
_THINKS = frozenset({"thinks", "thinks-tools"})
_CALLS = frozenset({"tools", "thinks-tools"})
# Anthropic's refusal of a tool-calling assistant turn that lost its thinking block.
THINKING_MISSING = (
    "messages.{at}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block"
)
# Streams that answer 200 and report a failure in an ``error`` event (the stream-* modes).
_FIRST_EVENT_ERRORS = {
    "stream-overloaded": "overloaded_error",
    "stream-invalid": "invalid_request_error",
}
# Streams that report a failure in an ``error`` event after the first delta.
_LATE_ERRORS = {
    "stream-late-error": "overloaded_error",
    "stream-late-api-error": "api_error",
    "stream-late-invalid": "invalid_request_error",
}
# What the ``refused`` model's 400 says (quotes and an apostrophe, as real messages have).
REFUSED = 'max_tokens: Input should be greater than 0 (it\'s "0")'
_STREAM_ERRORS = {
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "invalid_request_error": "messages: text content blocks must be non-empty",
}


@dataclass
class FakeAnthropic(FakeServer):
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    async def start(self) -> str:
        """Start serving; returns the base URL (what litellm takes as ``api_base``)."""
        port = await self.serve()
        return f"http://127.0.0.1:{port}"

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if body.get("model") == "broken":
            return _error(500, "api_error", "Internal server error")
        if "max_tokens" in body:  # Anthropic refuses fields a count does not take
            refused = "max_tokens: Extra inputs are not permitted"
            return _error(400, "invalid_request_error", refused)
        return web.json_response({"input_tokens": COUNTED + len(body.get("messages", []))})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model = body.get("model", "")
        if model == "slow":
            await self.wait_counting_abandon(asyncio.sleep(2))
        elif model == "rate-limited":
            return _error(
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit",
                {"retry-after": "2"},
            )
        elif model == "overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        elif model == "broken":
            return _error(500, "api_error", "Internal server error")
        elif model == "refused":
            return _error(400, "invalid_request_error", REFUSED)
        elif model == "html":  # a proxy's error page in front of the provider, sent with 200
            return web.Response(
                text="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html"
            )
        elif model == "leaky":
            key = request.headers.get("x-api-key", "")
            return _error(401, "authentication_error", f"invalid x-api-key: {key}")
        elif model == "dropped" and not body.get("stream"):
            return _drop(request)
        missing = _thinking_missing(body)
        if missing:
            return _error(400, "invalid_request_error", missing)
        searches = _web_searches(body)
        if body.get("stream"):
            return await self._stream(request, model, searches)
        usage: dict[str, Any] = _CACHE_MODES.get(
            model, {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}
        )
        if searches is not None:
            usage = {**usage, "server_tool_use": {"web_search_requests": searches}}
        content: list[dict[str, Any]] = [{"type": "text", "text": "".join(REPLY)}]
        if model in _THINKS:
            thinking = {"type": "thinking", "thinking": "".join(THOUGHT), "signature": SIGNATURE}
            content.insert(0, thinking)
        if model in _CALLS:
            content += [
                {"type": "tool_use", "id": id_, "name": name, "input": json.loads("".join(parts))}
                for id_, name, parts in TOOL_CALLS
            ]
        return web.json_response(
            {
                "id": "msg_fake01",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if model in _CALLS else "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        )

    async def _stream(
        self, request: web.Request, model: str, searches: int | None = None
    ) -> web.StreamResponse:
        tools: dict[str, Any] = {}
        if searches is not None:
            tools = {"server_tool_use": {"web_search_requests": 0}}
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        if model == "empty":
            await resp.write_eof()
            return resp

        async def send(event: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        async def fail(kind: str) -> web.StreamResponse:
            message = _STREAM_ERRORS[kind]
            await send("error", {"type": "error", "error": {"type": kind, "message": message}})
            await resp.write_eof()
            return resp

        if model in _FIRST_EVENT_ERRORS:
            return await fail(_FIRST_EVENT_ERRORS[model])

        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake02",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": INPUT_TOKENS,
                        **_CACHE_MODES.get(model, {}),
                        "output_tokens": 1,
                        **tools,
                    },
                },
            },
        )
        if model == "stream-api-error":
            await send("ping", {"type": "ping"})
            return await fail("api_error")
        at = 0  # the text block's index
        if model in _THINKS:
            await _send_thinking(send)
            at = 1
        await send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": at,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await send("ping", {"type": "ping"})
        for i, piece in enumerate(REPLY):
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": at,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
            if i == 0 and model == "gated":
                await self.wait_counting_abandon(self.gate.wait())
            if i == 0 and model == "murmurs":
                await self.wait_counting_abandon(_murmur(resp))
            if i == 0 and model == "cut":
                await resp.write_eof()
                return resp
            if i == 0 and model == "dropped":
                return _drop(request)
            if i == 0 and model in _LATE_ERRORS:
                return await fail(_LATE_ERRORS[model])
        await send("content_block_stop", {"type": "content_block_stop", "index": at})
        if model in _CALLS:
            await _send_tool_calls(send, at + 1)
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if model in _CALLS else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {
                    "output_tokens": _CACHE_MODES.get(model, {}).get(
                        "output_tokens", OUTPUT_TOKENS
                    ),
                    **({"server_tool_use": {"web_search_requests": searches}} if tools else {}),
                },
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        self.finished_streams += 1
        return resp


async def _murmur(resp: web.StreamResponse) -> None:
    for _ in range(66):
        await resp.write(b": keep-alive\n\n")
        await asyncio.sleep(0.3)


async def _send_thinking(send: Any) -> None:
    """The ``thinks`` model's thinking block, streamed at index 0: its text, then its
    signature."""
    block = {"type": "thinking", "thinking": "", "signature": ""}
    await send(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )
    deltas = [{"type": "thinking_delta", "thinking": piece} for piece in THOUGHT]
    for delta in [*deltas, {"type": "signature_delta", "signature": SIGNATURE}]:
        await send(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    await send("content_block_stop", {"type": "content_block_stop", "index": 0})


async def _send_tool_calls(send: Any, first: int) -> None:
    """The ``tools`` model's calls as Anthropic streams them, from block ``first`` on: a
    ``tool_use`` block's start (id, name, empty input), its input in ``input_json_delta``
    pieces, its stop."""
    for index, (id_, name, parts) in enumerate(TOOL_CALLS, start=first):
        block = {"type": "tool_use", "id": id_, "name": name, "input": {}}
        await send(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        for part in parts:
            delta = {"type": "input_json_delta", "partial_json": part}
            await send(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        await send("content_block_stop", {"type": "content_block_stop", "index": index})


def _drop(request: web.Request) -> web.Response:
    """Drop ``request``'s connection, as a server that goes down mid-answer: nothing more is
    sent (what aiohttp then answers goes nowhere)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


def _thinking_missing(body: dict[str, Any]) -> str:
    """Anthropic's refusal of ``body``, thinking enabled, whose last assistant turn calls a
    tool without starting with a thinking block; "" when it has none of that."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return ""
    messages = body.get("messages") or []
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not turns:
        return ""
    content = messages[turns[-1]].get("content")
    blocks = content if isinstance(content, list) else [{"type": "text"}]
    if not any(b.get("type") == "tool_use" for b in blocks):
        return ""
    found = blocks[0].get("type") if blocks else "nothing"
    if found in ("thinking", "redacted_thinking"):
        return ""
    return THINKING_MISSING.format(at=turns[-1], found=found)


def _web_searches(body: dict[str, Any]) -> int | None:
    """The searches an answer to ``body`` made: None without a web search tool, else the
    tool's ``max_uses`` (default 1)."""
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search"):
            uses = tool.get("max_uses")
            return uses if isinstance(uses, int) else 1
    return None


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}},
        status=status,
        headers=headers,
    )
