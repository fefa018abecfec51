"""``bus.connect.subscribed``: a subscription is on the server before anyone publishes to it.

A head says it is ready, and a model-proxy reads stored cancels, once their subscriptions are
made; nats-py's ``flush()`` can return before the server has read a SUB still in the client's
buffer (its PING is written ahead of it). A proxy between client and server that holds every
SUB for a moment makes that window wide enough to see every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from switchyard.bus.connect import subscribed
from tests.support import jetstream_server

pytestmark = pytest.mark.integration

HOLD_S = 0.3


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool) -> None:
    try:
        while data := await reader.read(65536):
            at = data.find(b"SUB ") if hold else -1
            if at >= 0:  # what came before the SUB passes now, the SUB and the rest later
                writer.write(data[:at])
                await writer.drain()
                await asyncio.sleep(HOLD_S)
                data = data[at:]
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _slow_sub_proxy(port: int) -> AsyncIterator[int]:
    """A local port that forwards to ``port``, holding each client write with a SUB a moment."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", port)
        for pipe in (_pipe(cr, sw, hold=True), _pipe(sr, cw, hold=False)):
            task = asyncio.create_task(pipe)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield proxy.sockets[0].getsockname()[1]
    finally:
        proxy.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await proxy.wait_closed()


async def test_a_subscription_hears_a_publish_made_right_after_subscribed(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (direct, _):
        url = direct.connected_url
        assert url is not None
        assert url.port is not None
        async with _slow_sub_proxy(url.port) as proxied:
            listener = await nats.connect(f"nats://127.0.0.1:{proxied}")
            try:
                got: list[Msg] = []

                async def on_msg(msg: Msg) -> None:
                    got.append(msg)

                await listener.subscribe("ready.check", cb=on_msg)
                await subscribed(listener)
                await direct.publish("ready.check", b"first")
                await direct.flush()
                for _ in range(40):
                    if got:
                        break
                    await asyncio.sleep(0.05)
                assert [m.data for m in got] == [b"first"]
            finally:
                await listener.close()
