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
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from switchyard.bus import identities, subjects
from switchyard.bus.connect import PINGS_OUTSTANDING, connect
from switchyard.client import LLMClient
from switchyard.runtime.shutdown import disconnect
from switchyard.workers.modelproxy.service import ModelProxy
from tests.relay import Relay
from tests.stacks import Stack, start_stack
from tests.support import until
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_MS = 1500  # how long the fake provider works before the answer's end (or its error)
STALLED = f"stall:{WAIT_MS}"  # two words, the pause, then the end of the stream
REFUSED = f"after:{WAIT_MS}:status:400"  # the pause, then a 400 (not retried, billed nothing)
REPLAYED = "replaying an answer sent across a NATS reconnect"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    routes = {
        alias: {"deployments": [{"provider": "fake", "model": model}]}
        for alias, model in {
            "late": STALLED,
            "refused": REFUSED,
            "echo": "echo",
            "slowecho": f"after:{WAIT_MS}:echo",
        }.items()
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


async def test_an_unbilled_answer_lost_with_a_node_is_sent_again_once_a_ping_finds_the_break(
    bare: Stack, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure that delivered nothing is not billed: nothing waited for a store on the
    connection, and the answer was acknowledged at once (the ack, gone with the node too, left
    the request to a redelivery after ``ack_wait_s``: past a deadline shorter than that, a 504,
    and a second provider call). Now a ping finds the break and the 400 comes at once."""
    caplog.set_level(logging.INFO, logger="switchyard.modelproxy")
    text = f"refused {time.time_ns()}"
    async with relayed_proxy(bare) as (relay, nc):
        started = time.monotonic()
        reading = asyncio.create_task(_ask(bare, "refused", text, timeout_s=8))
        await until(lambda: _calls(upstream, text) == 1, timeout=20)  # it is the provider's
        await lose_the_end(relay, nc, reading)
        await answered(reading, "(no answer)")
        status, body = reading.result()
    assert status == 400, body  # not 504: the deadline (8 s) is shorter than ack_wait_s (10 s)
    assert "fake upstream error 400" in body["error"]["message"], body
    assert time.monotonic() - started < 7.5
    assert _calls(upstream, text) == 1  # answered by the first call, not a redelivery
    assert REPLAYED in caplog.text


async def test_an_internal_clients_answer_lost_with_its_own_connection_is_sent_again(
    bare: Stack, upstream: FakeOpenAI
) -> None:
    """An internal client's replies go on a connection of their own (``internal``), its bill
    and ack on the main one. Its node dying after the answer went into it, the bill was stored
    and the request acknowledged over the main connection, whatever became of the answer: the
    caller waited for its deadline, and no redelivery came. Now a ping on ``internal`` waits
    for the server to have read it all, and finds the break."""
    relay = Relay(bare.settings.stack.nats_port)
    await relay.open()
    nc = await connect(
        bare.settings.nats_servers,
        bare.settings.certs_dir,
        identities.MODELPROXY.name,
        name="modelproxy-direct",
    )
    # Its extra connections (signals, internal) go through the relay; the main one does not.
    nats = msgspec.structs.replace(bare.settings.nats, servers=(f"tls://127.0.0.1:{relay.port}",))
    proxy = ModelProxy(nc, msgspec.structs.replace(bare.settings, nats=nats))
    app = await bare.connect("app")
    try:
        await proxy.start()
        internal = proxy.internal
        assert internal is not None
        relay.swallow()  # the internal connection's node dies before the request comes
        reconnects = internal.stats["reconnects"]
        async with LLMClient(app, api_key=bare.api_key) as llm:
            started = time.monotonic()
            text = f"inside {time.time_ns()}"
            body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
            asking = asyncio.create_task(llm.chat(body, timeout=15))
            await until(lambda: _calls(upstream, text) == 1, timeout=10)
            await asyncio.sleep(1.0)  # its answer goes out, and is swallowed
            assert relay.swallowed > 0, "the model-proxy sent nothing"
            assert internal.stats["reconnects"] == reconnects
            assert not asking.done(), "the answer got through before the swallow"
            relay.cut()
            await relay.open()
            await until(lambda: internal.stats["reconnects"] > reconnects, timeout=20)
            await answered(asking, "(no answer)")
            answer = asking.result()
    finally:
        await app.close()
        await proxy.stop(2)
        await disconnect(nc)
        relay.cut()
    assert answer["choices"][0]["message"]["content"] == f"echo: {text}", answer
    assert time.monotonic() - started < 10  # not its 15 s deadline's 504


async def test_an_internal_answer_whose_connection_still_reconnects_at_its_ping_is_sent_again(
    bare: Stack, upstream: FakeOpenAI
) -> None:
    """The internal connection's node died with the answer in it, and the break was found
    while the bill waited (on the main connection, its node gone too): when the bill is
    stored, ``internal`` is still reconnecting. A ping asked then came back at once, unsent
    (nats-py), with the reconnect count unchanged: no replay, and the caller waited for its
    deadline. Now the ping waits for the new connection, whose count tells the break."""
    port = bare.settings.stack.nats_port
    main_relay, own_relay = Relay(port), Relay(port)
    await main_relay.open()
    await own_relay.open()
    nc = await connect(
        [f"tls://127.0.0.1:{main_relay.port}"],
        bare.settings.certs_dir,
        identities.MODELPROXY.name,
        name="modelproxy-relayed",
    )
    nats = msgspec.structs.replace(
        bare.settings.nats, servers=(f"tls://127.0.0.1:{own_relay.port}",)
    )
    proxy = ModelProxy(nc, msgspec.structs.replace(bare.settings, nats=nats))
    app = await bare.connect("app")
    reader = await bare.connect("provisioner")
    js = reader.jetstream()
    try:
        await proxy.start()
        internal = proxy.internal
        assert internal is not None
        reconnects = internal.stats["reconnects"]
        stored = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
        async with LLMClient(app, api_key=bare.api_key) as llm:
            text = f"inside {time.time_ns()}"
            body = {"model": "slowecho", "messages": [{"role": "user", "content": text}]}
            asking = asyncio.create_task(llm.chat(body, timeout=25))
            await until(lambda: _calls(upstream, text) == 1, timeout=10)
            main_relay.swallow()  # both nodes die: the answer and its bill go nowhere
            own_relay.swallow()
            await asyncio.sleep(WAIT_MS / 1000 + 1.0)
            assert own_relay.swallowed > 0, "the model-proxy sent nothing"
            assert not asking.done(), "the answer got through before the swallow"
            own_relay.cut()  # found: ``internal`` reconnects, and cannot yet
            main_relay.cut()
            await main_relay.open()  # the bill is stored once its publisher tries again
            async with asyncio.timeout(20):
                while (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq == stored:
                    await asyncio.sleep(0.05)
            assert internal.stats["reconnects"] == reconnects, "reconnected before the bill"
            await asyncio.sleep(0.5)
            await own_relay.open()
            await answered(asking, "(no answer)")
            answer = asking.result()
    finally:
        await reader.close()
        await app.close()
        await proxy.stop(2)
        await disconnect(nc)
        main_relay.cut()
        own_relay.cut()
    assert answer["choices"][0]["message"]["content"] == f"echo: {text}", answer


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


async def _ask(stack: Stack, model: str, text: str, *, timeout_s: float) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": str(timeout_s)}
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers)
    return reply.status_code, reply.json()


def _calls(upstream: FakeOpenAI, text: str) -> int:
    """The provider calls whose last message is ``text``."""
    return sum(
        1
        for call in upstream.calls
        if (call.body.get("messages") or [{}])[-1].get("content") == text
    )


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
