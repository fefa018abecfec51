"""An idle process sleeps, on a real nats-server: KV followers without nats-py's flow-control
poll (which still answers flow control when nats-py has to wait), and an LLM client whose
reconnect watch runs only while requests wait. Each wake-up costs ~0.2 ms of CPU here; these
were most of an idle platform's CPU."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from switchyard.bus.flow_control import quiet_flow_control
from switchyard.client import LLMClient
from switchyard.runtime.kvwatch import KvFollower
from tests.support import jetstream_server

pytestmark = pytest.mark.integration
_T = TypeVar("_T")


class _CountingSelector(selectors.DefaultSelector):
    """Counts the event loop's waits: each is one wake-up of the process."""

    waits = 0

    def select(self, timeout: float | None = None) -> Any:
        _CountingSelector.waits += 1
        return super().select(timeout)


async def _idle_waits(nc: NATS, quiet: bool) -> int:
    """The loop's waits over 2 idle seconds while following four KV buckets."""
    js = nc.jetstream()
    followers: list[KvFollower] = []
    watchers: list[Any] = []
    for i in range(4):
        name = f"b{i}-{'quiet' if quiet else 'polled'}"
        kv = await js.create_key_value(bucket=name)
        await kv.put("k", b"v")
        if quiet:
            follower = KvFollower(js, name, lambda *_: None)
            await follower.start()
            followers.append(follower)
        else:  # nats-py's own watch, as KvFollower made it before
            watchers.append(await kv.watch(">"))
    await asyncio.sleep(0.5)  # settle: initial values delivered
    before = _CountingSelector.waits
    await asyncio.sleep(2.0)
    waits = _CountingSelector.waits - before
    for follower in followers:
        await follower.stop()
    for watcher in watchers:
        await watcher.stop()
    return waits


def _counting(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``main`` on an event loop whose waits are counted."""
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(_CountingSelector())) as r:
        return r.run(main())


def test_idle_kv_followers_do_not_wake_the_process(tmp_path: Path) -> None:
    async def run() -> tuple[int, int]:
        async with jetstream_server(tmp_path) as (nc, _):
            return await _idle_waits(nc, quiet=False), await _idle_waits(nc, quiet=True)

    polled, quiet = _counting(run)
    print(f"wake-ups in 2 s: {polled} polled, {quiet} quiet")
    # nats-py's poll: four watches x 4 a second x 2 s = 32 timers, some of which fire in the
    # same wake-up (a loaded CI machine counted 31; one running two test processes, 19). At
    # twice the quiet bound, the count still tells polling from quiet.
    assert polled >= 16, polled
    # Quiet: only the 2 s sleep itself and the odd server heartbeat (every 5 s per watch).
    assert quiet <= 8, (quiet, polled)


def test_an_idle_llm_client_does_not_wake_the_process(tmp_path: Path) -> None:
    """Its reconnect watch looked 5 times a second; it now sleeps until a request waits
    (tests/test_llm_client.py shows a waiting request still notices a reconnect)."""

    async def run() -> int:
        async with jetstream_server(tmp_path) as (nc, _):
            client = LLMClient(nc)
            await client.start()
            try:
                await asyncio.sleep(0.3)
                before = _CountingSelector.waits
                await asyncio.sleep(2.0)
                return _CountingSelector.waits - before
            finally:
                await client.close()

    waits = _counting(run)
    assert waits <= 10, waits  # the 2 s sleep itself and the odd other; the old watch: 20+


async def test_flow_control_is_answered_when_nats_py_must_wait(tmp_path: Path) -> None:
    """A consumer read from its queue directly, slower than the server sends: nats-py has to
    schedule its flow-control answers until the messages before them are taken, so the
    replacement task must send them, or the server stops delivering."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="S", subjects=["s.>"]))
        count, payload = 400, b"x" * (256 * 1024)  # 100 MB: the server asks several times
        for _ in range(count):
            await js.publish("s.a", payload)
        answers: list[str] = []
        publish = nc.publish

        async def spy(subject: str, *args: Any, **kwargs: Any) -> None:
            if subject.startswith("$JS.FC."):
                answers.append(subject)
            await publish(subject, *args, **kwargs)

        nc.publish = spy  # type: ignore[method-assign]
        # Heartbeats 30 s apart: nats-py would take 60 s to notice a stall and re-create the
        # consumer, so an unanswered request stops the delivery for the whole test.
        sub = await js.subscribe("s.>", ordered_consumer=True, idle_heartbeat=30)
        assert quiet_flow_control(sub)
        inbox = sub._sub.subject
        got = 0

        async def drain() -> None:
            nonlocal got
            async for _ in sub._sub.messages:  # past next_msg, which also answers
                got += 1
                if got % 50 == 0:
                    await asyncio.sleep(0.05)  # slower than the server: answers must wait
                if got == count:
                    return

        await asyncio.wait_for(drain(), 40)
        assert got == count
        assert sub._sub.subject == inbox  # the same consumer throughout: never stalled
        assert answers, "the server never asked for flow control: the test proves nothing"
        await sub.unsubscribe()
