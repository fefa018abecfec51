"""One read of a KV bucket's live values (:func:`switchyard.runtime.kvlatest.latest`), and a
follower's start (:class:`switchyard.runtime.kvwatch.KvFollower`), against a real nats-server:
both see every stored value even when nats-py says "nothing stored" first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.runtime.kvlatest import latest
from switchyard.runtime.kvwatch import KvFollower
from tests.support import jetstream_server


@pytest_asyncio.fixture
async def js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    async with jetstream_server(tmp_path) as (nc, _):
        yield nc.jetstream(timeout=10)


class EarlyEmptyMarker(KeyValue):
    """A bucket whose watches say "nothing stored" before their entries, which come a moment
    later: what nats-py does when the server's answer to the watch's consumer-info request
    overtakes the entries it delivered (seen once in 300 reads on an idle machine; under a
    loaded CI, a batch list came back empty)."""

    late: ClassVar[set[asyncio.Task[None]]] = set()

    async def watch(self, *args: Any, **kwargs: Any) -> KeyValue.KeyWatcher:
        watcher = await super().watch(*args, **kwargs)
        queue = watcher._updates
        held: list[KeyValue.Entry] = []
        async with asyncio.timeout(5):  # take every entry the server holds off the queue
            while True:
                entry = await queue.get()
                if not isinstance(entry, KeyValue.Entry):  # nats-py's own marker
                    if not held and (await self.status()).values == 0:
                        break  # an empty bucket
                    continue
                held.append(entry)
                if entry.delta == 0:
                    break
        await queue.put(None)

        async def later() -> None:
            await asyncio.sleep(0.3)
            for entry in held:
                await queue.put(entry)

        task = asyncio.create_task(later())
        self.late.add(task)
        task.add_done_callback(self.late.discard)
        return watcher


async def _bucket(js: JetStreamContext) -> KeyValue:
    kv = await js.create_key_value(bucket="b")
    return EarlyEmptyMarker(name=kv._name, stream=kv._stream, pre=kv._pre, js=js, direct=True)


async def test_values_behind_an_early_empty_marker_are_read(js: JetStreamContext) -> None:
    kv = await _bucket(js)
    await kv.put("one", b"1")
    await kv.put("two", b"2")
    await kv.delete("two")
    await kv.put("three", b"3")
    deleted: set[str] = set()
    found = await asyncio.wait_for(latest(js, kv, ">", deleted=deleted), 10)
    assert found == {"one": b"1", "three": b"3"}
    assert deleted == {"two"}


async def test_an_empty_bucket_reads_empty_at_once(js: JetStreamContext) -> None:
    kv = await _bucket(js)
    assert await asyncio.wait_for(latest(js, kv, ">"), 10) == {}
    await kv.put("gone", b"x")
    await kv.purge("gone")
    deleted: set[str] = set()
    assert await asyncio.wait_for(latest(js, kv, ">", deleted=deleted), 10) == {}
    assert deleted == {"gone"}


async def test_a_follower_starts_with_every_stored_value(js: JetStreamContext) -> None:
    """A follower is ready (a head serves) only once the current contents are applied: an
    early marker made a starting head briefly see no routes or keys."""
    kv = await _bucket(js)
    await kv.put("route.a", b"A")
    await kv.put("route.b", b"B")

    async def early_marker_bucket(bucket: str) -> KeyValue:
        return kv

    js.key_value = early_marker_bucket  # type: ignore[method-assign]
    seen: dict[str, bytes | None] = {}

    def on_entry(key: str, value: bytes | None, revision: int) -> None:
        seen[key] = value

    follower = KvFollower(js, "b", on_entry)
    await follower.start()
    try:
        assert seen == {"route.a": b"A", "route.b": b"B"}
    finally:
        await follower.stop()
