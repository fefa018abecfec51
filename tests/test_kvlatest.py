"""One read of a KV bucket's live values (:func:`switchyard.runtime.kvlatest.latest`) against a
real nats-server: it sees every stored value even when nats-py says "nothing stored" first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.runtime.kvlatest import latest
from tests.support import jetstream_server


@pytest_asyncio.fixture
async def js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    async with jetstream_server(tmp_path) as (nc, _):
        yield nc.jetstream(timeout=10)


class EarlyEmptyMarker(KeyValue):
    """A bucket whose watches start with nats-py's "nothing stored" marker, as they do when the
    server's answer to the watch's consumer-info request overtakes the entries it delivered
    (seen once in 300 reads on an idle machine; under a loaded CI, a batch list came back
    empty)."""

    async def watch(self, *args: Any, **kwargs: Any) -> KeyValue.KeyWatcher:
        watcher = await super().watch(*args, **kwargs)
        queued = []
        while not watcher._updates.empty():
            queued.append(watcher._updates.get_nowait())
        await watcher._updates.put(None)
        for entry in queued:
            await watcher._updates.put(entry)
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
