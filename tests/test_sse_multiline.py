"""An SSE event whose data spans several ``data:`` lines, on the session stack.

The SSE standard joins the ``data:`` lines of one event with newlines; a server writing each
chunk's JSON pretty-printed (``data: {``, ``data:   "id": ...``, ``data: }``) is within it. The
model-proxy read line by line and sent each line as an event of its own: a chat stream's
client got broken JSON (``{``, ``"id": ...``), and the Responses translation failed the answer
with 502 ``invalid_upstream_reply``. A fake provider over real HTTP writes every event so.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from tests.fakes.server import FakeServer, InThread
from tests.stacks import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORDS = ["joined", "per", "the", "standard"]


class Multiline(FakeServer):
    """Streams chat chunks, each event's JSON pretty-printed over several ``data:`` lines (a
    comment and an ``event:`` field among them; ``\\r\\n`` line ends for model ``crlf``)."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def start(self) -> str:
        return f"http://127.0.0.1:{await self.serve()}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if not body.get("stream"):
            return web.json_response(_whole(body["model"]))
        end = "\r\n" if body["model"] == "crlf" else "\n"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-multi",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        chunks = [chunk({"role": "assistant", "content": ""}, None)]
        chunks += [chunk({"content": f"{w} "}, None) for w in WORDS]
        chunks.append(chunk({}, "stop"))
        last = chunk({}, None)
        last["choices"] = []
        last["usage"] = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        chunks.append(last)
        await resp.write(f": a comment{end}".encode())
        for doc in chunks:
            lines = json.dumps(doc, indent=2).split("\n")
            event = f"event: chunk{end}" + "".join(f"data: {line}{end}" for line in lines)
            await resp.write(f"{event}{end}".encode())
        await resp.write(f"data: [DONE]{end}{end}".encode())
        return resp


def _whole(model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": "".join(f"{w} " for w in WORDS)}
    return {
        "id": "chatcmpl-whole",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }


ROUTES = {
    "multiline": {"deployments": [{"provider": "multiline", "model": "lf"}]},
    "multiline-crlf": {"deployments": [{"provider": "multiline", "model": "crlf"}]},
}


@pytest.fixture(scope="module")
def multiline() -> Iterator[tuple[Multiline, str]]:
    fake = Multiline()
    runner = InThread(fake)
    try:
        yield fake, runner.start(fake.start)
    finally:
        runner.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack, multiline: tuple[Multiline, str]) -> AsyncIterator[Stack]:
    providers = {"multiline": {"kind": "openai-compatible", "api_base": multiline[1]}}
    async with stack.live_routes(ROUTES, providers):
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
            for alias in ROUTES:
                for _ in range(150):  # every head and model-proxy follows the table
                    probe = await http.post(
                        "/v1/chat/completions",
                        json=_chat(alias),
                        headers={"Authorization": f"Bearer {stack.api_key}"},
                    )
                    if probe.status_code != 404:
                        break
                    await asyncio.sleep(0.2)
        yield stack


def _chat(alias: str, **fields: Any) -> dict[str, Any]:
    return {"model": alias, "messages": [{"role": "user", "content": "hi"}], **fields}


async def _events(stack: Stack, path: str, body: dict[str, Any]) -> list[str]:
    """The ``data:`` values of a streamed answer, one per event."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with (
        httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http,
        http.stream("POST", path, json=body, headers=headers) as resp,
    ):
        assert resp.status_code == 200, (await resp.aread())[:400]
        text = (await resp.aread()).decode()
    events = []
    for block in text.split("\n\n"):
        data = [line[5:].strip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            assert len(data) == 1, block  # each chunk passed on as one line
            events.append(data[0])
    return events


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("alias", list(ROUTES))
async def test_a_chat_stream_gets_each_event_whole(routed: Stack, alias: str) -> None:
    events = await _events(routed, "/v1/chat/completions", _chat(alias, stream=True))
    assert events[-1] == "[DONE]", events
    chunks = [json.loads(e) for e in events[:-1]]  # broken JSON: a line per event before
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(f"{w} " for w in WORDS)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.asyncio(loop_scope="session")
async def test_the_responses_translation_reads_the_joined_events(routed: Stack) -> None:
    """It answered 502 ``invalid_upstream_reply`` (a line of JSON is no chunk)."""
    body = {"model": "multiline", "input": "hi", "stream": True}
    events = [json.loads(e) for e in await _events(routed, "/v1/responses", body)]
    assert events[-1]["type"] == "response.completed", events[-1]
    done = events[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == "".join(f"{w} " for w in WORDS)
