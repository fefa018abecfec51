"""A PING whose PONG comes after its caller stopped waiting leaves the connection working.

nats-py (2.16) cancels the PONG's future of a flush that timed out or was cancelled, and the
PONG, come late, killed the connection's read loop (``InvalidStateError``): "connected", it
received nothing until the stale-connection check reconnected it. Every wait for a PONG in
Switchyard goes through ``switchyard/bus/pings.py``, which never cuts a PING short. A real
nats-server, stopped (SIGSTOP) for longer than the wait, answers late once continued: the
connection must still receive what is published to it at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import pings
from switchyard.bus.connect import subscribed
from switchyard.workers.modelproxy import probes
from tests.support import jetstream_server, pause, until

pytestmark = pytest.mark.integration

BOUND_S = 0.3  # how long each wait below lasts: the server is stopped for longer


async def _subscribed(nc: NATS) -> None:
    with pytest.raises(TimeoutError):
        await subscribed(nc, timeout=BOUND_S)  # type: ignore[arg-type,unused-ignore]


async def _probe(nc: NATS) -> None:
    await probes.probe([], nc)  # its flush is not answered within PROBE_READ_S: nothing done


async def _answered(nc: NATS) -> None:
    assert not await pings.answered(nc, BOUND_S)


async def _pong_cancelled(nc: NATS) -> None:
    waiting = asyncio.create_task(pings.pong(nc, 60))
    await asyncio.sleep(BOUND_S)
    waiting.cancel()  # its caller went: the PING stays
    with pytest.raises(asyncio.CancelledError):
        await waiting


WAITS: dict[str, Callable[[NATS], Awaitable[None]]] = {
    "subscribed": _subscribed,
    "probe": _probe,
    "answered": _answered,
    "pong_cancelled": _pong_cancelled,
}


@pytest.mark.parametrize("wait", sorted(WAITS))
async def test_a_late_pong_leaves_the_connection_receiving(
    wait: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "PROBE_READ_S", BOUND_S)
    async with jetstream_server(tmp_path) as (listener, server):
        got: list[bytes] = []

        async def on_msg(msg: Msg) -> None:
            got.append(msg.data)

        await listener.subscribe("after.late.pong", cb=on_msg)
        await subscribed(listener)
        await pause(server.pid)
        try:
            await WAITS[wait](listener)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        url = listener.connected_url
        assert url is not None
        publisher = await nats.connect(url.geturl())
        try:
            await publisher.publish("after.late.pong", b"at once")
            await publisher.flush()
            await until(lambda: got, timeout=3)  # the stale check would take minutes here
        finally:
            await publisher.close()
        assert got == [b"at once"]
        assert listener.is_connected
        assert listener.stats["reconnects"] == 0


async def test_no_answer_is_read_from_a_connection_that_is_reconnecting(tmp_path: Path) -> None:
    """nats-py answers a PING asked while it reconnects at once, unsent: ``answered`` said
    True then (a probe round concluded its callers had not answered probes the server never
    read), and a model-proxy's confirming ping saw no break. It waits for the connection and
    says False when none came within its bound."""
    async with jetstream_server(tmp_path) as (nc, server):
        await subscribed(nc)
        server.kill()
        await until(lambda: not nc.is_connected, timeout=10)
        assert not await pings.answered(nc, BOUND_S)
        with pytest.raises(TimeoutError):
            await pings.pong(nc, BOUND_S)
