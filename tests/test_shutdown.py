"""A worker stopped mid-request: nothing it held is lost, nothing it ran is left running.

Its own stack without model-proxies: the test runs them in-process, so it can stop one while
requests are in its hands and then look at the event loop. Requests that had streamed content
end with a clear error within the grace period (a stream cannot move to another worker);
requests that had not are handed back to the queue at once and another worker finishes them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from switchyard.workers.modelproxy.service import ModelProxy
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRACE_S = 0.5


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
        },
        "routes": {
            "held": {"deployments": [{"provider": "fake", "model": "ctl:held"}]},
            "trickle": {"deployments": [{"provider": "fake", "model": "paced:3000"}]},
        },
        "modelproxy": {"ack_wait_s": 30},
    }
    components = ["tail", "head", "secrets", "control", "accounting"]
    stack = await start_stack(tmp_path_factory.mktemp("shutdown"), extra, components)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _proxy(stack: Stack) -> tuple[ModelProxy, object]:
    nc = await stack.connect("modelproxy")
    proxy = ModelProxy(nc, stack.settings)
    await proxy.start()
    return proxy, nc


async def _chat(stack: Stack, model: str, *, stream: bool) -> tuple[int, str, float]:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(timeout=60) as http:
        if not stream:
            resp = await http.post(
                f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers
            )
            return resp.status_code, resp.text, time.monotonic()
        async with http.stream(
            "POST", f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers
        ) as resp:
            text = "".join([chunk async for chunk in resp.aiter_text()])
            return resp.status_code, text, time.monotonic()


async def test_a_stopped_worker_finishes_or_answers_everything_and_leaves_no_task(
    bare: Stack, upstream: FakeOpenAI
) -> None:
    upstream.set_mode("held", "hang")
    before = asyncio.all_tasks()
    proxy, nc = await _proxy(bare)
    requests = [
        asyncio.ensure_future(_chat(bare, "held", stream=False)),
        asyncio.ensure_future(_chat(bare, "held", stream=False)),
        asyncio.ensure_future(_chat(bare, "trickle", stream=True)),
        asyncio.ensure_future(_chat(bare, "trickle", stream=True)),
    ]
    deadline = time.monotonic() + 20
    while len(upstream.calls_for("ctl:held")) < 2 or len(upstream.calls_for("paced:3000")) < 2:
        assert time.monotonic() < deadline, "the provider never saw the requests"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the streams' first chunks reach their callers

    stopped_at = time.monotonic()
    await proxy.stop(GRACE_S)
    await nc.drain()  # type: ignore[attr-defined]
    assert time.monotonic() - stopped_at < GRACE_S + 2
    leftover = {t for t in asyncio.all_tasks() - before if t not in requests and not t.done()}
    assert not leftover, leftover

    # Started streams: ended with a clear error event, within the grace period.
    streams = await asyncio.wait_for(asyncio.gather(*requests[2:]), 10)
    for status, text, ended in streams:
        assert status == 200
        assert '"w0"' in text or "w0" in text  # content had been delivered
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        error = json.loads(events[-1])["error"]
        assert error["code"] == "worker_stopped"
        assert ended - stopped_at < GRACE_S + 2
    assert not any(r.done() for r in requests[:2])  # back in the queue, not answered

    # Requests that had not started: another worker takes them and finishes them.
    upstream.set_mode("held", "echo")
    second, nc2 = await _proxy(bare)
    try:
        done = await asyncio.wait_for(asyncio.gather(*requests[:2]), 20)
    finally:
        await second.stop(GRACE_S)
        await nc2.drain()  # type: ignore[attr-defined]
    for status, text, _ in done:
        assert status == 200, text
        assert json.loads(text)["choices"][0]["message"]["content"] == "echo: hi"
