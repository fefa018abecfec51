"""An edge that stops answers the requests still waiting, and error answers name their deployment.

Its own stack without edges: the test runs the tail in-process (``run_edge``, as ``switchyard
serve tail`` does), so it can stop it while requests wait and then read its log. A stop first
lets requests finish for its grace period; the ones still waiting then get a JSON 503
``edge_stopping`` in their API's shape (a started stream ends with that error event), and their
cancels reach the model-proxies before the edge's NATS connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.config import Settings
from switchyard.ingress.server import run_edge
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The edge's stop: a grace of 2 s (half of it, less the second kept to answer), then 503s.
STOP_TIMEOUT_S = 6.0
GRACE_S = 2.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def core(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
        },
        "routes": {
            "held": {"deployments": [{"provider": "fake", "model": "ctl:edge-stop-held"}]},
            "trickle": {"deployments": [{"provider": "fake", "model": "trickle:200"}]},
            "released": {"deployments": [{"provider": "fake", "model": "ctl:edge-stop"}]},
            "refused": {"deployments": [{"provider": "fake", "model": "status:400"}]},
        },
    }
    components = ["head", "modelproxy", "secrets", "control", "accounting"]
    stack = await start_stack(tmp_path_factory.mktemp("edgestop"), extra, components)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


@contextlib.asynccontextmanager
async def _tail(stack: Stack) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    """The tail, in this process, until the test sets the event it yields (or leaves)."""
    settings: Settings = msgspec.structs.replace(
        stack.settings,
        stack=msgspec.structs.replace(stack.settings.stack, stop_timeout_s=STOP_TIMEOUT_S),
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_edge(settings, "tail", stop, instance="tail-in-test"))
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                assert not task.done(), "the edge ended while starting"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{stack.tail_url}/ready")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the edge never became ready"
                await asyncio.sleep(0.1)
        yield stop, task
    finally:
        stop.set()
        await asyncio.wait_for(task, STOP_TIMEOUT_S + 5)


async def _call(stack: Stack, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    """A whole answer: status, headers, body."""
    async with httpx.AsyncClient(timeout=60) as http:
        resp = await http.post(
            f"{stack.tail_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {stack.api_key}", "anthropic-version": "2023-06-01"},
        )
        return resp.status_code, dict(resp.headers), resp.text


async def _stream(
    stack: Stack, body: dict[str, Any], first: asyncio.Event
) -> tuple[int, dict[str, str], str]:
    """A streamed answer read to its end; ``first`` is set when content arrived."""
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream(
            "POST",
            f"{stack.tail_url}/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        ) as resp,
    ):
        text = ""
        async for part in resp.aiter_text():
            text += part
            if '"content"' in text:
                first.set()
        return resp.status_code, dict(resp.headers), text


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_stopping_edge_answers_every_waiting_request(
    core: Stack, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.set_mode("edge-stop", "gate:edge-stop")
    upstream.set_mode("edge-stop-held", "hang")  # its own name: the fake serves the session
    cancelled: list[str] = []

    async def on_cancel(msg: Msg) -> None:
        cancelled.append((msg.headers or {}).get(h.REQUEST_ID, ""))

    watcher = await core.connect("modelproxy")  # hears cancels as the model-proxies do
    await watcher.subscribe(subjects.CANCEL, cb=on_cancel)
    caplog.set_level(logging.INFO)
    try:
        async with _tail(core) as (stop, edge):
            streaming = asyncio.Event()
            calls = [
                asyncio.ensure_future(_call(core, "/v1/chat/completions", _chat("held"))),
                asyncio.ensure_future(
                    _call(core, "/v1/messages", {**_chat("held"), "max_tokens": 16})
                ),
                asyncio.ensure_future(_stream(core, _chat("trickle"), streaming)),
                asyncio.ensure_future(_call(core, "/v1/chat/completions", _chat("released"))),
            ]
            deadline = time.monotonic() + 20
            while (
                len(upstream.calls_for("ctl:edge-stop-held")) < 2
                or not upstream.calls_for("ctl:edge-stop")
                or not streaming.is_set()
            ):
                assert time.monotonic() < deadline, "the provider never saw every request"
                assert not any(c.done() for c in calls), [c.result() for c in calls if c.done()]
                await asyncio.sleep(0.05)

            stopped_at = time.monotonic()
            stop.set()
            upstream.open_gate("edge-stop")  # answered within the grace period: a plain 200
            (chat, anthropic, stream, released) = await asyncio.wait_for(
                asyncio.gather(*calls), STOP_TIMEOUT_S + 5
            )
            answered_at = time.monotonic()
            await asyncio.wait_for(edge, STOP_TIMEOUT_S + 5)
        await watcher.flush()
    finally:
        await watcher.close()

    assert released[0] == 200, released
    # Waited for the grace period, then answered before uvicorn's own timeout.
    assert GRACE_S - 0.5 < answered_at - stopped_at < STOP_TIMEOUT_S / 2 + 1

    status, headers, text = chat
    assert status == 503, text
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1"
    assert json.loads(text)["error"]["code"] == "edge_stopping"

    status, headers, text = anthropic
    assert status == 503, text
    assert headers["retry-after"] == "1"
    doc = json.loads(text)
    assert doc["type"] == "error"
    assert "shutting down" in doc["error"]["message"]

    status, headers, text = stream
    assert status == 200
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == "edge_stopping"

    # The calls nobody will read were cancelled while the edge's connection was still open.
    ids = {r[1]["x-request-id"] for r in (chat, anthropic, stream)}
    assert ids <= set(cancelled), (ids, cancelled)

    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if "Exception in ASGI application" in m]
    assert [m for m in logged if "3 request(s) still in progress" in m], logged


async def test_an_error_answer_names_the_deployment_that_refused(core: Stack) -> None:
    async with _tail(core):
        status, headers, text = await _call(core, "/v1/chat/completions", _chat("refused"))
        assert status == 400, text
        assert headers["x-switchyard-deployment"]
        assert headers["x-switchyard-attempts"] == "1"

        streaming = asyncio.Event()
        status, headers, text = await _stream(core, _chat("refused"), streaming)
        assert status == 400, text
        assert headers["x-switchyard-deployment"]

        # Refused before any deployment was chosen: nothing to name.
        status, headers, text = await _call(core, "/v1/chat/completions", _chat("no-such"))
        assert status == 404, text
        assert "x-switchyard-deployment" not in headers
