"""A service's NATS connection ends within its bound whatever the server is doing, and leaves no
reconnect loop behind (real nats-server: paused, or gone)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import nats
import pytest

from switchyard.runtime.shutdown import STOP_STEP_S, disconnect
from switchyard.stack import binaries
from tests.support import free_port, jetstream_server, pause

pytestmark = pytest.mark.integration


async def _noop(_msg: object) -> None:
    return None


def _reconnect_loops() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "_attempt_reconnect" in repr(t.get_coro())
    ]


async def test_a_paused_server_cannot_hold_the_stop(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, server):
        await nc.subscribe("work.>", cb=_noop)
        await pause(server.pid)  # no answers: a drain's flush would wait 10 s
        try:
            began = time.monotonic()
            await disconnect(nc)
            took = time.monotonic() - began
        finally:
            server.send_signal(signal.SIGCONT)
        assert nc.is_closed
        assert took < 2 * STOP_STEP_S + 1


async def test_a_gone_server_leaves_no_reconnect_loop(tmp_path: Path) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()),
        *["-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        nc = await nats.connect(
            f"nats://127.0.0.1:{port}",
            max_reconnect_attempts=-1,  # as every service connects
            reconnect_time_wait=0.05,
            connect_timeout=2,
        )
        await nc.subscribe("work.>", cb=_noop)
    finally:
        server.kill()
        await server.wait()
    while not nc.is_reconnecting:
        await asyncio.sleep(0.01)
    assert _reconnect_loops()  # refused attempts, again and again
    await disconnect(nc)  # nats-py's drain refuses a reconnecting connection
    assert nc.is_closed
    await asyncio.sleep(0.2)
    assert _reconnect_loops() == []
