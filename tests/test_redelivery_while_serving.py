"""A request delivered again to the model-proxy that is still serving it is not served twice.

Its own stack without model-proxies: the test runs one in-process and stops its progress
signals, so the dispatch message's claim lapses (``ack_wait_s`` 2 s here) while the provider
still works on the first delivery, and JetStream delivers it again, to the same process. The
copy joins the job in hand (``modelproxy/serving.py``): no second provider call, one answer,
and the message is acknowledged once the first delivery ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from switchyard.bus import subjects
from switchyard.schemas.routing import deployment_id
from switchyard.workers.modelproxy.service import ModelProxy
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "ctl:dup"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 4}
        },
        "routes": {"dup": {"deployments": [{"provider": "fake", "model": MODEL}]}},
        "modelproxy": {"ack_wait_s": 2, "keepalive_s": 1},
    }
    components = ["tail", "head", "secrets", "control", "accounting"]
    stack = await start_stack(tmp_path_factory.mktemp("redeliver"), extra, components)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def test_a_redelivery_to_the_process_serving_it_calls_the_provider_once(
    bare: Stack, upstream: FakeOpenAI
) -> None:
    gate = f"dup-{uuid.uuid4().hex[:8]}"
    upstream.set_mode("dup", f"gate:{gate}")
    before = len(upstream.calls_for(MODEL))
    nc = await bare.connect("modelproxy")
    proxy = ModelProxy(nc, bare.settings)
    watcher = await bare.connect("provisioner")
    js = watcher.jetstream()
    consumer = subjects.dispatch_consumer(deployment_id("fake", MODEL))
    try:
        await proxy.start()
        await proxy.heartbeats.stop()  # no progress signal: the claim lapses after ack_wait
        answer = asyncio.ensure_future(_chat(bare))
        deadline = time.monotonic() + 20
        while (await js.consumer_info(subjects.DISPATCH_STREAM, consumer)).num_redelivered < 1:
            assert time.monotonic() < deadline, "the request was never delivered again"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the copy reached the handler (a second call would show)
        assert len(upstream.calls_for(MODEL)) - before == 1

        upstream.open_gate(gate)
        status, text = await asyncio.wait_for(answer, 20)
        assert status == 200, text
        assert "echo: hi" in text
        while True:
            info = await js.consumer_info(subjects.DISPATCH_STREAM, consumer)
            if info.num_ack_pending == 0 and info.num_pending == 0:
                break
            assert time.monotonic() < deadline + 20, "the message was never acknowledged"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # past ack_wait: an unacknowledged copy would come again
        info = await js.consumer_info(subjects.DISPATCH_STREAM, consumer)
        assert info.num_ack_pending == 0
        assert len(upstream.calls_for(MODEL)) - before == 1
    finally:
        upstream.open_gate(gate)
        await proxy.stop(0.5)
        await nc.drain()
        await watcher.close()


async def _chat(stack: Stack) -> tuple[int, str]:
    body = {"model": "dup", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(timeout=60) as http:
        resp = await http.post(f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers)
    return resp.status_code, resp.text


async def test_a_copy_handled_after_its_answer_is_acknowledged_not_served(
    bare: Stack, upstream: FakeOpenAI
) -> None:
    """The copy JetStream sent while the first delivery was served reaches the handler only
    after that delivery was answered and acknowledged (a busy process handles it late; here
    the test holds it back): it is acknowledged unserved, not a second provider call."""
    gate = f"late-{uuid.uuid4().hex[:8]}"
    upstream.set_mode("dup", f"gate:{gate}")
    before = len(upstream.calls_for(MODEL))
    nc = await bare.connect("modelproxy")
    proxy = ModelProxy(nc, bare.settings)
    handle = proxy.handler.handle
    first_done = asyncio.Event()
    copies: list[int] = []

    async def late_copies(msg: Msg, deployment: str) -> None:
        if msg.metadata.num_delivered > 1:
            copies.append(msg.metadata.num_delivered)
            await first_done.wait()
        await handle(msg, deployment)

    proxy.handler.handle = late_copies  # type: ignore[method-assign,assignment]
    watcher = await bare.connect("provisioner")
    js = watcher.jetstream()
    consumer = subjects.dispatch_consumer(deployment_id("fake", MODEL))
    try:
        await proxy.start()
        await proxy.heartbeats.stop()  # no progress signal: the claim lapses after ack_wait
        answer = asyncio.ensure_future(_chat(bare))
        deadline = time.monotonic() + 20
        while not copies:
            assert time.monotonic() < deadline, "the request was never delivered again"
            await asyncio.sleep(0.1)
        upstream.open_gate(gate)
        status, text = await asyncio.wait_for(answer, 20)
        assert status == 200, text
        while (await js.consumer_info(subjects.DISPATCH_STREAM, consumer)).num_ack_pending:
            assert time.monotonic() < deadline + 20, "the first delivery was never acknowledged"
            await asyncio.sleep(0.1)
        first_done.set()  # now the copies reach the handler
        await asyncio.sleep(1.0)  # a second call would show by now
        assert len(upstream.calls_for(MODEL)) - before == 1
        info = await js.consumer_info(subjects.DISPATCH_STREAM, consumer)
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
    finally:
        first_done.set()
        upstream.open_gate(gate)
        await proxy.stop(0.5)
        await nc.drain()
        await watcher.close()
