"""An answer whose end went into a NATS node that died before passing it on reaches its caller.

The model-proxy sent the whole answer, final and terminator included, before its connection
was known to be broken: its first check found nothing to replay, and the caller, on an
unbroken connection of its own, had no reason to stop waiting. A failover test saw such a
stream end 504 at its 25 s deadline. The bill waits for the usage to be stored on the same
connection, and an answer not billed waits for the server's answer to a ping: a break found
then sends the answer again (``workers/modelproxy/replay.py``).

Its own stack without model-proxies: one runs in-process, connected through a relay that first
swallows what it sends (the dead node: the connection stays up, nothing gets through), then
cuts the connection, which reconnects. A node that dies without closing its sockets is found
by the client's own pings (``bus/connect.py``), also shown here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from switchyard.bus import identities
from switchyard.bus.connect import PINGS_OUTSTANDING, connect
from switchyard.runtime.shutdown import disconnect
from switchyard.workers.modelproxy.service import ModelProxy
from tests.relay import Relay
from tests.stacks import Stack, start_stack
from tests.support import until
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_MS = 1500  # how long the fake provider works before the answer's end (or its error)
STALLED = f"stall:{WAIT_MS}"  # two words, the pause, then the end of the stream
REFUSED = f"slowfail:{WAIT_MS}:400"  # the pause, then a 400 (billed nothing)
REPLAYED = "replaying an answer sent across a NATS reconnect"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    routes = {
        alias: {"deployments": [{"provider": "fake", "model": model}]}
        for alias, model in {"late": STALLED, "refused": REFUSED}.items()
    }
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": routes,
        "modelproxy": {"keepalive_s": 1},
    }
    components = ["tail", "head", "secrets", "control", "accounting"]
    stack = await start_stack(tmp_path_factory.mktemp("latereplay"), extra, components)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


@contextlib.asynccontextmanager
async def relayed_proxy(stack: Stack) -> AsyncIterator[tuple[Relay, NATS]]:
    """A model-proxy in this process whose NATS connection goes through a relay."""
    relay = Relay(stack.settings.stack.nats_port)
    await relay.open()
    proxy: ModelProxy | None = None

    async def reconnected() -> None:  # as serve_worker wires it
        if proxy is not None:
            proxy.on_reconnect()

    nc = await connect(
        [f"tls://127.0.0.1:{relay.port}"],
        stack.settings.certs_dir,
        identities.MODELPROXY.name,
        name="modelproxy-relayed",
        reconnected_cb=reconnected,
    )
    proxy = ModelProxy(nc, stack.settings)
    try:
        await proxy.start()
        yield relay, nc
    finally:
        await proxy.stop(2)
        await disconnect(nc)
        relay.cut()


async def lose_the_end(relay: Relay, nc: NATS, reading: asyncio.Task[Any]) -> None:
    """The node dies now (what the model-proxy sends goes nowhere); the provider's pause
    passes and the model-proxy sends the rest, which is swallowed; then the break is found
    (the relay cuts the connection) and the model-proxy reconnects."""
    relay.swallow()
    reconnects = nc.stats["reconnects"]
    await asyncio.sleep(WAIT_MS / 1000 + 1.0)
    assert relay.swallowed > 0, "the model-proxy sent nothing after the swallow began"
    assert nc.stats["reconnects"] == reconnects, "the break was found before the end was sent"
    assert not reading.done(), "the answer's end got through before the swallow"
    relay.cut()
    await relay.open()
    await until(lambda: nc.stats["reconnects"] > reconnects, timeout=20)


async def answered(reading: Coroutine[Any, Any, Any] | asyncio.Task[Any], events: Any) -> None:
    try:
        await asyncio.wait_for(reading, 30)
    except TimeoutError:
        pytest.fail(f"the answer's end never came after the reconnect: {events}")


@pytest.mark.parametrize("include_usage", [False, True])
async def test_an_answer_lost_with_a_node_found_dead_only_at_its_bill_is_sent_again(
    bare: Stack, caplog: pytest.LogCaptureFixture, include_usage: bool
) -> None:
    """With ``include_usage``, the usage chunk Switchyard adds for a provider that sent none
    (:mod:`switchyard.workers.modelproxy.shown_usage`) is kept with the chunks: the replay
    sends it again, once, before the end."""
    caplog.set_level(logging.INFO, logger="switchyard.modelproxy")
    async with relayed_proxy(bare) as (relay, nc):
        started = time.monotonic()
        events: list[dict[str, Any] | str] = []
        reading = asyncio.create_task(_stream(bare, events, include_usage=include_usage))
        await until(lambda: bool(events), timeout=20)  # the first words came through
        await lose_the_end(relay, nc, reading)
        await answered(reading, events)
    assert events[-1] == "[DONE]", events[-3:]
    text = "".join(
        str(choice.get("delta", {}).get("content") or "")
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )
    assert text.split() == ["half", "an"], events
    assert not any(isinstance(e, dict) and "error" in e for e in events), events
    counted = [e for e in events if isinstance(e, dict) and e.get("usage")]
    if include_usage:  # the provider sent none: Switchyard's estimate, once, last
        assert counted == [events[-2]], events
        assert counted[0]["choices"] == []
        assert counted[0]["usage"]["estimated"] is True
        assert counted[0]["usage"]["completion_tokens"] == 2  # "half an": 7 bytes
    else:
        assert not counted, events
    assert REPLAYED in caplog.text  # the end came from the replay
    # A few seconds after the reconnect (the usage publisher's retry), not at the request's
    # 60 s deadline.
    assert time.monotonic() - started < 30


async def test_an_error_answer_billed_nothing_is_sent_again_after_a_ping_finds_the_break(
    bare: Stack, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """No usage is stored for an answer that cost nothing (here the provider's 400): the
    server's answer to a ping stands in for it, and the break it finds sends the answer again."""
    caplog.set_level(logging.INFO, logger="switchyard.modelproxy")
    called = len(upstream.calls_for(REFUSED))
    async with relayed_proxy(bare) as (relay, nc):
        reading = asyncio.create_task(_whole(bare, "refused"))
        await until(lambda: len(upstream.calls_for(REFUSED)) > called, timeout=20)
        await lose_the_end(relay, nc, reading)
        await answered(reading, "(no answer)")
        status, body = reading.result()
    assert status == 400, body
    assert body["error"]["message"].startswith("fake upstream error 400"), body
    assert REPLAYED in caplog.text


async def test_a_connection_to_a_node_gone_silent_is_left_after_its_unanswered_pings(
    bare: Stack,
) -> None:
    """The node stops answering without closing the socket (a host lost, a partition): the
    client leaves it once its pings go unanswered (nats-py's own default waited 4-6 minutes),
    and reconnects."""
    relay = Relay(bare.settings.stack.nats_port)
    await relay.open()
    ping_s = 0.5
    nc = await connect(
        [f"tls://127.0.0.1:{relay.port}"],
        bare.settings.certs_dir,
        identities.MODELPROXY.name,
        name="modelproxy-silent",
        ping_interval=ping_s,
    )
    try:
        await nc.flush()
        relay.swallow()
        began = time.monotonic()
        await until(lambda: not nc.is_connected, timeout=(PINGS_OUTSTANDING + 2) * ping_s + 5)
        assert time.monotonic() - began >= PINGS_OUTSTANDING * ping_s  # not left at once
        relay.flow()
        await until(lambda: nc.is_connected and nc.stats["reconnects"] == 1, timeout=20)
        await nc.flush(timeout=5)
    finally:
        await disconnect(nc)
        relay.cut()


async def _whole(stack: Stack, model: str) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "60"}
    async with httpx.AsyncClient(timeout=90) as http:
        reply = await http.post(f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers)
    return reply.status_code, reply.json()


async def _stream(
    stack: Stack, events: list[dict[str, Any] | str], *, include_usage: bool = False
) -> None:
    body: dict[str, Any] = {
        "model": "late",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
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
