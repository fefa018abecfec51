"""A fake Google Gemini API (AI Studio, ``/v1beta``) on a free loopback port.

Speaks the real wire format: ``models/{model}:generateContent`` (a GenerateContentResponse with
``candidates`` and ``usageMetadata``), ``:streamGenerateContent?alt=sse`` (one such response per
``data:`` event, usage cumulative on each), ``:embedContent`` / ``:batchEmbedContents``, and the
``{"error": {"code", "message", "status"}}`` error body. What it does is chosen by the model:

``ok``            answers normally (streamed or not)
``gated``         streams the first chunk, then waits for :attr:`FakeGemini.gate`
``rate-limited``  429 ``RESOURCE_EXHAUSTED`` with ``Retry-After: 2`` (and a RetryInfo detail)
``broken``        500 ``INTERNAL``
``slow``          waits 2 s, then answers normally
``leaky``         400 whose message echoes the ``x-goog-api-key`` it received (tests redaction)
``tools``         answers the text, then calls :data:`TOOL_CALLS` (``functionCall`` parts)
``callsfirst``    streamed: calls :data:`TOOL_CALLS` in its first event, then the text (litellm
                  gives the event with the calls a ``finish_reason``, though more follows)

A request's ``candidateCount`` (``n``) is answered with that many candidates, each the same
text; streamed, every candidate gets its ``finishReason`` in the last event, as Gemini does.

The base URL to give litellm is ``<server>/v1beta``, as for the real API: litellm appends
``/models/{model}:{method}`` to a custom ``api_base``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer

REPLY = ("Hello", " from", " fake", " Gemini.")
PROMPT_TOKENS = 5
# What the ``tools`` model calls: (name, args).
TOOL_CALLS = (("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"}))
EMBEDDING_SIZE = 4


@dataclass
class FakeGemini(FakeServer):
    def routes(self, app: web.Application) -> None:
        # "{model}:{method}" is one path segment; aiohttp variables stop only at "/".
        app.router.add_post("/v1beta/models/{target}", self._models)

    async def start(self) -> str:
        """Start serving; returns the API base URL, version segment included."""
        port = await self.serve()
        return f"http://127.0.0.1:{port}/v1beta"

    async def _models(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model, _, method = request.match_info["target"].rpartition(":")
        if model == "slow":
            await self.wait_counting_abandon(asyncio.sleep(2))
        elif model == "rate-limited":
            return _error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                {"Retry-After": "2"},
                [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
            )
        elif model == "broken":
            return _error(500, "INTERNAL", "An internal error has occurred.")
        elif model == "html":  # a proxy's error page in front of the provider, sent with 200
            return web.Response(
                text="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html"
            )
        elif model == "leaky":
            key = request.headers.get("x-goog-api-key", "")
            return _error(400, "INVALID_ARGUMENT", f"API key not valid: {key}")
        n = _candidates(body)
        if method == "generateContent":
            return web.json_response(_response(model, "".join(REPLY), len(REPLY), True, n))
        if method == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await self._stream(request, model, n)
        if method == "embedContent":
            return web.json_response({"embedding": {"values": _vector(body["content"])}})
        if method == "batchEmbedContents":
            vectors = [{"values": _vector(r["content"])} for r in body["requests"]]
            return web.json_response({"embeddings": vectors})
        return _error(404, "NOT_FOUND", f"method {method} not found")

    async def _stream(self, request: web.Request, model: str, n: int) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for i, piece in enumerate(REPLY):
            chunk = _response(model, piece, i + 1, i == len(REPLY) - 1, n)
            await resp.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            if i == 0 and model == "gated":
                await self.wait_counting_abandon(self.gate.wait())
        await resp.write_eof()
        self.finished_streams += 1
        return resp


def _candidates(body: dict[str, Any]) -> int:
    config = body.get("generationConfig") or {}
    count = config.get("candidateCount", config.get("candidate_count"))
    return count if isinstance(count, int) and count > 0 else 1


def _response(model: str, text: str, output_tokens: int, final: bool, n: int) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}]
    if output_tokens == 1 and model == "callsfirst":
        parts = [{"functionCall": {"name": name, "args": args}} for name, args in TOOL_CALLS]
    if final and model == "tools":
        parts += [{"functionCall": {"name": name, "args": args}} for name, args in TOOL_CALLS]
    candidates: list[dict[str, Any]] = []
    for index in range(n):
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
        if final:
            candidate["finishReason"] = "STOP"
        candidates.append(candidate)
    return {
        "candidates": candidates,
        "usageMetadata": {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": PROMPT_TOKENS + output_tokens,
        },
        "modelVersion": f"{model}-001",  # a version of the model asked for, as Gemini names it
        "responseId": "fake-response-1",
    }


def _vector(content: dict[str, Any]) -> list[float]:
    text = "".join(part.get("text", "") for part in content.get("parts", []))
    return [float(len(text))] + [0.5] * (EMBEDDING_SIZE - 1)


def _error(
    status: int,
    kind: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": kind}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)
