"""How streams end at the edge, end to end on the session stack.

* A Node SDK's ``X-Stainless-Timeout`` (Claude Code sends it) times only the wait for the
  response headers, which go out with a stream's first chunk: it bounds that wait, never the
  stream. It was the whole stream's deadline: a stream longer than the SDK's timeout was cut
  with ``timeout_error`` (and the part sent billed). A stream whose provider has begun (its
  role came, held in the model-proxy until content) starts before that wait runs out; it was
  a 504 since the opening was held.
* A Responses stream the edge ends itself (its deadline passed, its reply ended in an error)
  ends as the model-proxy ends a translated one: ``error`` with the next ``sequence_number``,
  then ``response.failed``. It was a bare ``error`` without a ``sequence_number`` (the openai
  SDK read None where its type says int), and nothing after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from aiohttp import web
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from tests.fakes.events import NumberedEvents
from tests.fakes.server import FakeServer, InThread
from tests.stacks import Stack

pytestmark = pytest.mark.integration

NATIVE = "s43-es-native"
# Alias -> (provider, upstream model); "fake" is the session stack's chat provider.
ROUTES = {
    "s43-es-paced": ("fake", "paced:700"),  # 6 chunks 0.7 s apart: about 4 s
    "s43-es-late": ("fake", "slow:3000"),  # its first chunk after 3 s
    "s43-es-thinks": ("fake", "rolelate:2500"),  # its role at once, its content 2.5 s later
    "s43-es-thinks-fails": ("fake", "role503:2500"),  # its role, a 503 in the stream 2.5 s later
    "s43-es-cut": (NATIVE, "cut-midway"),
    "s43-es-stall": (NATIVE, "stall-midway"),
    "s43-es-native-thinks": (NATIVE, "thinks"),  # its opening at once, its text 2.5 s later
}
# Two deployments: the first sends its role, then a 503 (the request is rerouted), the next
# its role, then its answer. In this order: the next is the route's fallback (as two
# deployments of one route, either was picked first, and half the time nothing moved).
MOVES, MOVES_ON = "s43-es-moves", "s43-es-moves-on"
MOVES_ROUTES = {
    MOVES: {"deployments": [{"provider": "fake", "model": "role503:700"}], "fallbacks": [MOVES_ON]},
    MOVES_ON: {"deployments": [{"provider": "fake", "model": "rolelate:700"}]},
}


class CuttingResponses(FakeServer):
    """OpenAI's Responses API, streamed: ``response.created``, ``.in_progress`` and three
    deltas, then the connection closes without an end (``cut-midway``) or nothing more comes
    (``stall-midway``); ``thinks``: the deltas 2.5 s after the opening, then
    ``response.completed``."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._responses)

    async def start(self) -> str:
        return f"http://127.0.0.1:{await self.serve()}/v1"

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        send = NumberedEvents(resp).send
        response: dict[str, Any] = {"id": "resp_cutting", "object": "response", "output": []}
        response |= {"status": "in_progress", "model": body.get("model")}
        await send("response.created", {"response": response})
        await send("response.in_progress", {"response": response})
        if body.get("model") == "thinks":
            await asyncio.sleep(2.5)
        where = {"item_id": "msg_cutting", "output_index": 0, "content_index": 0}
        for word in ("one", " two", " three"):
            await send("response.output_text.delta", {**where, "delta": word})
        if body.get("model") == "thinks":  # a whole answer
            usage = {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}
            done = {**response, "status": "completed", "usage": usage}
            await send("response.completed", {"response": done})
            return resp
        if body.get("model") == "stall-midway":
            await self.wait_counting_abandon(asyncio.sleep(60))
        elif request.transport is not None:
            request.transport.close()  # mid-answer: no terminating chunk
        return resp


@pytest.fixture(scope="module")
def cutting() -> Iterator[str]:
    fake = CuttingResponses()
    runner = InThread(fake)
    try:
        yield runner.start(fake.start)
    finally:
        runner.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def routed(stack: Stack, cutting: str) -> AsyncIterator[Stack]:
    provider = {"kind": "openai", "api_base": cutting, "secret": NATIVE}
    try:
        stored = await stack.admin("PUT", f"/secrets/{NATIVE}", {"value": "sk-s43"})
        assert stored.status_code in (200, 201), stored.text
        assert (await stack.admin("PUT", f"/providers/{NATIVE}", provider)).status_code == 200
        for alias, (name, model) in ROUTES.items():
            route = {"deployments": [{"provider": name, "model": model}]}
            assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
        for alias in (MOVES_ON, MOVES):
            put = await stack.admin("PUT", f"/routes/{alias}", MOVES_ROUTES[alias])
            assert put.status_code == 200, put.text
        for _ in range(300):  # every head and model-proxy follows the table on its own
            async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
                probe = await http.post(
                    "/v1/responses",
                    json={"model": "s43-es-cut", "input": "up"},
                    headers={"Authorization": f"Bearer {stack.api_key}"},
                )
            # The provider cuts every answer: its 502 says the head and a model-proxy both
            # know the route and the provider (a cooling deployment's 503 says nothing).
            if probe.status_code == 502 and "closed the connection" in probe.text:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the routes were not served in 30 s: {probe.status_code} {probe.text}")
        await asyncio.sleep(1.5)  # the rest of the table, and the probe's cool-down
        yield stack
    finally:
        for alias in (*ROUTES, MOVES, MOVES_ON):
            await stack.admin("DELETE", f"/routes/{alias}")
        await stack.admin("DELETE", f"/providers/{NATIVE}")
        await stack.admin("DELETE", f"/secrets/{NATIVE}?force=true")


def _events(body: str) -> list[dict[str, Any]]:
    data = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    return [json.loads(doc) for doc in data if doc != "[DONE]"]


async def _post(stack: Stack, path: str, doc: dict[str, Any], **given: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.api_key}", **given}
    if path == "/v1/messages":
        headers["anthropic-version"] = "2023-06-01"
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        return await http.post(path, json={**doc, "stream": True}, headers=headers)


CHAT = {"messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_node_sdks_timeout_bounds_the_first_chunk_not_the_stream(routed: Stack) -> None:
    """``X-Stainless-Timeout: 2`` and a stream of about 4 s whose first chunk comes at once:
    the whole answer, in the chat and in Anthropic's dialect (Claude Code's case). A first
    chunk that does not come within it: 504 in the route's dialect, before any content."""
    sdk = {"X-Stainless-Timeout": "2"}
    chat = await _post(routed, "/v1/chat/completions", {**CHAT, "model": "s43-es-paced"}, **sdk)
    assert chat.status_code == 200
    assert chat.text.rstrip().endswith("data: [DONE]"), chat.text
    words = "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in _events(chat.text)
        if e.get("choices")
    )
    assert words == "w0 w1 w2 w3 w4 w5", chat.text
    claude = await _post(routed, "/v1/messages", {**MESSAGES, "model": "s43-es-paced"}, **sdk)
    kinds = [e["type"] for e in _events(claude.text)]
    assert kinds[-1] == "message_stop", claude.text
    assert "error" not in kinds

    late = {"model": "s43-es-late"}
    within = {"X-Stainless-Timeout": "1"}
    slow = await _post(routed, "/v1/chat/completions", {**CHAT, **late}, **within)
    assert slow.status_code == 504, slow.text
    assert slow.json()["error"]["code"] == "deadline_exceeded"
    slow_claude = await _post(routed, "/v1/messages", {**MESSAGES, **late}, **within)
    assert slow_claude.status_code == 504, slow_claude.text
    assert slow_claude.json()["error"]["type"] == "timeout_error"
    # Anthropic's Python SDK sends NOT_GIVEN: no timeout, the stream runs to its end.
    python = {"X-Stainless-Timeout": "NOT_GIVEN"}
    whole = await _post(routed, "/v1/chat/completions", {**CHAT, "model": "s43-es-paced"}, **python)
    assert whole.text.rstrip().endswith("data: [DONE]"), whole.text


async def test_a_node_sdks_timeout_starts_a_stream_whose_provider_has_begun(
    routed: Stack,
) -> None:
    """A reasoning model's role at once, its content 2.5 s later, ``X-Stainless-Timeout:
    1.5``: the headers (200) before 1.5 s, then the whole answer (the model-proxy holds the
    role until the content; the edge hears that the provider began). A failure after that
    point ends the stream in an error event. Without the header: the HTTP error as before."""
    within = {"X-Stainless-Timeout": "1.5"}
    doc = {**CHAT, "model": "s43-es-thinks"}
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=30) as http:
        began = asyncio.get_running_loop().time()
        async with http.stream(
            "POST",
            "/v1/chat/completions",
            json={**doc, "stream": True},
            headers={"Authorization": f"Bearer {routed.api_key}", **within},
        ) as resp:
            waited = asyncio.get_running_loop().time() - began
            body = (await resp.aread()).decode()
    assert resp.status_code == 200, body
    assert waited < 1.5, waited  # the SDK's timer was met
    assert body.rstrip().endswith("data: [DONE]"), body
    words = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in _events(body) if e.get("choices")
    )
    assert words == "echo: hi", body

    # Translated to Anthropic's dialect (its opening held there too), and a native Responses
    # stream (its provider's opening events held in the passthrough).
    claude = await _post(routed, "/v1/messages", {**MESSAGES, "model": "s43-es-thinks"}, **within)
    assert claude.status_code == 200, claude.text
    assert [e["type"] for e in _events(claude.text)][-1] == "message_stop", claude.text
    native = {"model": "s43-es-native-thinks", "input": "hi"}
    responses = await _post(routed, "/v1/responses", native, **within)
    assert responses.status_code == 200, responses.text
    assert _events(responses.text)[-1]["type"] == "response.completed", responses.text

    failing = {**CHAT, "model": "s43-es-thinks-fails"}
    failed = await _post(routed, "/v1/chat/completions", failing, **within)
    assert failed.status_code == 200, failed.text
    assert "error" in _events(failed.text)[-1], failed.text
    plain = await _post(routed, "/v1/chat/completions", failing)
    assert plain.status_code >= 500, plain.text  # nothing started it: an HTTP error


def _assert_failed_after(events: list[Any]) -> None:
    """``error`` numbered after the last event relayed, then ``response.failed`` of the
    Response the stream opened with; nothing after it."""
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    error, failed = events[-2], events[-1]
    before = [e.sequence_number for e in events[:-2]]
    assert all(isinstance(n, int) for n in before), before
    assert isinstance(error.sequence_number, int), error
    assert error.sequence_number > max(before), (before, error)
    assert failed.sequence_number == error.sequence_number + 1
    assert failed.response.id == events[0].response.id
    assert failed.response.status == "failed"
    assert failed.response.error is not None


@pytest.mark.parametrize(
    ("alias", "timeout"), [("s43-es-paced", "2.5"), ("s43-es-stall", "2.5"), ("s43-es-cut", "")]
)
async def test_a_responses_stream_the_edge_ends_ends_in_response_failed(
    routed: Stack, alias: str, timeout: str
) -> None:
    """Read by the official openai SDK: a translated stream whose deadline passes midway
    (``X-Request-Timeout``), a native one whose provider stalls past it, a native one whose
    provider's connection closes midway."""
    headers = {"X-Request-Timeout": timeout} if timeout else {}
    async with openai.AsyncOpenAI(
        base_url=routed.tail_url + "/v1", api_key=routed.api_key, max_retries=0, timeout=30
    ) as client:
        stream = await client.responses.create(
            model=alias, input="hi", stream=True, extra_headers=headers
        )
        events: list[Any] = [event async for event in stream]
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in [e.type for e in events]
    _assert_failed_after(events)
    if timeout:
        assert events[-2].code == "deadline_exceeded", events[-2]
        # Not "before an answer arrived": text had been streamed (an explorer's repro).
        assert "passed while the answer was streaming, after " in events[-2].message, events[-2]
    else:  # the provider was reached and hung up: not "unreachable" (the network was fine)
        assert events[-2].code == "provider_disconnected", events[-2]


async def test_a_model_proxys_begun_names_its_placement(routed: Stack) -> None:
    """The first deployment began (its role held: ``Sy-Begun``), then failed; the head put the
    request on the next one: each begun names its placement (``Sy-Placement``), so a caller
    can tell the first's, should it come after the second ``accepted``, from the second's
    (it started the stream early at an edge, and a batch line read as worked on again)."""
    nc = await routed.connect("app")
    inbox = nc.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=got.put)
    seen: list[tuple[str, str, str]] = []  # kind, placement, begun
    try:
        body = {**CHAT, "model": MOVES, "stream": True}
        deadline = str(int((time.time() + 30) * 1000))
        headers = {"Authorization": f"Bearer {routed.api_key}", h.DEADLINE: deadline}
        await nc.publish(subjects.CHAT, json.dumps(body).encode(), reply=inbox, headers=headers)
        async with asyncio.timeout(30):
            while (msg := await got.get()).headers:  # the terminator has none
                hdrs = msg.headers or {}
                kind = hdrs.get(h.KIND, "")
                if kind in ("accepted", "keepalive"):
                    seen.append((kind, hdrs.get(h.PLACEMENT, ""), hdrs.get(h.BEGUN, "")))
    finally:
        await sub.unsubscribe()
        await nc.close()
    assert ("keepalive", "1", "1") in seen, seen
    assert ("keepalive", "2", "1") in seen, seen
    assert ("accepted", "2", "") in seen, seen
    assert all(placement for kind, placement, _ in seen), seen
