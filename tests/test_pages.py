"""Reading a pull consumer's messages a page bounded in bytes at a time
(``runtime.pages``), on a real nats-server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from switchyard.errors import BusError
from switchyard.runtime import pages
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


async def _consumer(nc: NATS, sizes: list[int]) -> int:
    """A stream holding one message of each size, and a consumer of it; its pending count."""
    js = nc.jetstream(timeout=10)
    await js.add_stream(name="S", subjects=["s.>"])
    for i, size in enumerate(sizes):
        await js.publish(f"s.{i}", bytes([65 + i % 26]) * size)
    await js.add_consumer("S", ConsumerConfig(name="reader", ack_policy=AckPolicy.NONE))
    return (await js.consumer_info("S", "reader")).num_pending or 0


async def test_every_message_comes_in_pages_no_larger_than_the_byte_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PAGE_BYTES", 2500)
    sizes = [1000] * 9 + [2400, 10, 10]
    async with jetstream_server(tmp_path) as (nc, _):
        pending = await _consumer(nc, sizes)
        asks: list[Msg] = []

        async def heard(msg: Msg) -> None:
            asks.append(msg)

        await nc.subscribe("$JS.API.CONSUMER.MSG.NEXT.S.reader", cb=heard)
        got = [msg async for msg in pages.read_all(nc, "S", "reader", pending)]
        assert [m.subject for m in got] == [f"s.{i}" for i in range(len(sizes))]
        assert [len(m.data) for m in got] == sizes
        # 2 of the 1,000-byte messages fit a page: 5 pages for 9, one for 2,400, one for the rest.
        assert len(asks) == 7
        # The consumer is left exactly where a reader should leave it: nothing pending.
        info = await nc.jetstream().consumer_info("S", "reader")
        assert (info.num_pending, info.delivered.consumer_seq) == (0, len(sizes))


async def test_the_servers_count_of_what_is_left_ends_the_read(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        pending = await _consumer(nc, [10, 10, 10])
        # Told of more than there is, the reader still stops after the last message (each
        # message says how many are left), and does not wait for the rest.
        got = [m.subject async for m in pages.read_all(nc, "S", "reader", pending + 2)]
        assert got == ["s.0", "s.1", "s.2"]


async def test_messages_said_to_be_pending_that_never_come_are_an_error(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        pending = await _consumer(nc, [10, 10, 10])
        await nc.jetstream().purge_stream("S")  # gone between the count and the read
        started = time.monotonic()
        with pytest.raises(BusError, match="none sent"):
            [m async for m in pages.read_all(nc, "S", "reader", pending)]
        assert time.monotonic() - started < pages.PAGE_WAIT_S  # the server said so at once


async def test_nothing_pending_reads_nothing(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        await _consumer(nc, [])
        assert [m async for m in pages.read_all(nc, "S", "reader", 0)] == []
