"""An answer whose end went into a NATS node that died before passing it on reaches its caller.

The model-proxy sent the whole stream, final and terminator included, before its connection
was known to be broken: its first check found nothing to replay, and the caller, on an
unbroken connection of its own, had no reason to stop waiting. A failover test saw such a
stream end 504 at its 25 s deadline. The bill waits for the usage to be stored on the same
connection; a break found then sends the answer again (``replay.late_replay_needed``).

Its own stack without model-proxies: one runs in-process, connected through a relay that first
swallows what it sends (the dead node: the connection stays up, nothing gets through), then
cuts the connection, which reconnects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.runtime.shutdown import disconnect
from switchyard.workers.modelproxy.service import ModelProxy
from tests.relay import Relay
from tests.stacks import Stack, start_stack
from tests.support import until
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALL_MS = 1500  # the fake provider's pause after its first two words


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {"late": {"deployments": [{"provider": "fake", "model": f"stall:{STALL_MS}"}]}},
        "modelproxy": {"keepalive_s": 1},
    }
    components = ["tail", "head", "secrets", "control", "accounting"]
    stack = await start_stack(tmp_path_factory.mktemp("latereplay"), extra, components)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def test_an_answer_lost_with_a_node_found_dead_only_at_its_bill_is_sent_again(
    bare: Stack,
) -> None:
    relay = Relay(bare.settings.stack.nats_port)
    await relay.open()
    proxy: ModelProxy | None = None

    async def reconnected() -> None:  # as serve_worker wires it
        if proxy is not None:
            proxy.on_reconnect()

    nc = await connect(
        [f"tls://127.0.0.1:{relay.port}"],
        bare.settings.certs_dir,
        identities.MODELPROXY.name,
        name="modelproxy-relayed",
        reconnected_cb=reconnected,
    )
    proxy = ModelProxy(nc, bare.settings)
    try:
        await proxy.start()
        started = time.monotonic()
        events: list[dict[str, Any] | str] = []
        reading = asyncio.create_task(_stream(bare, events))
        await until(lambda: bool(events), timeout=20)  # the first words came through
        relay.swallow()  # the node dies: the rest of the answer goes nowhere
        reconnects = nc.stats["reconnects"]
        # The provider's pause, then its end: sent by the model-proxy, swallowed, and its
        # usage too (stored only after the reconnect below, when its publisher retries).
        await asyncio.sleep(STALL_MS / 1000 + 1.0)
        swallowed = relay.swallowed
        assert swallowed > 0, "the model-proxy sent nothing after the first words"
        assert nc.stats["reconnects"] == reconnects, "the break was found before the bill"
        relay.cut()  # the break is found now, after the answer went out whole
        await relay.open()
        await until(lambda: nc.stats["reconnects"] > reconnects, timeout=20)
        try:
            await asyncio.wait_for(reading, 30)
        except TimeoutError:
            pytest.fail(f"the answer's end never came after the reconnect: {events}")
    finally:
        await proxy.stop(2)
        await disconnect(nc)
        relay.cut()
    assert events[-1] == "[DONE]", events[-3:]
    text = "".join(
        str(choice.get("delta", {}).get("content") or "")
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )
    assert text.split() == ["half", "an"], events
    assert not any(isinstance(e, dict) and "error" in e for e in events), events
    # Answered by the replay a few seconds after the reconnect (the usage publisher's retry),
    # not at the request's 60 s deadline.
    assert time.monotonic() - started < 30


async def _stream(stack: Stack, events: list[dict[str, Any] | str]) -> None:
    body = {"model": "late", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "60"}
    async with (
        httpx.AsyncClient(timeout=90) as http,
        http.stream(
            "POST", f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers
        ) as reply,
    ):
        assert reply.status_code == 200, await reply.aread()
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
            if data == "[DONE]":
                return
