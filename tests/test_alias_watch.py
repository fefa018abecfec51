"""An edge's watch of the route table's aliases (``ingress.alias_watch``) on a real
nats-server, with a hand-driven head: it outlives a NATS error (the server gone a moment),
and stopping it mid-ask sends no cancel (the ask names no key: every model-proxy would refuse
one, and count it as refused)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterable
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import replies, subjects
from switchyard.client import LLMClient
from switchyard.ingress.alias_watch import AliasWatch
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from tests.support import flushed, jetstream_server, settle, until

pytestmark = pytest.mark.integration


def _listing(*aliases: str) -> bytes:
    data = [{"id": a, "object": "model", "created": 0, "owned_by": "x"} for a in aliases]
    return msgspec.json.encode({"object": "list", "data": data})


async def _head(port: int, answer: bytes | None, asked: asyncio.Event) -> NATS:
    """A head on the server at ``port`` that answers ``llm.v1.models`` with ``answer``
    (None: accepts and never answers)."""
    head = await nats.connect(f"nats://127.0.0.1:{port}")

    async def on_models(msg: Msg) -> None:
        await replies.send_accepted(head, msg.reply)
        asked.set()
        if answer is not None:
            await replies.send_final(head, msg.reply, answer)

    await head.subscribe(subjects.MODELS, queue="head", cb=on_models)
    await flushed(head)
    return head


async def test_the_watch_outlives_a_nats_error_and_its_stop_sends_no_cancel(
    tmp_path: Path,
) -> None:
    """Only ApiError and DecodeError were caught: the server gone a moment (the edge's
    publish raised OutboundBufferLimitError while reconnecting) ended the watch for good, and
    no alias added afterwards had its series before its first request. And an edge stopped
    while it asked sent a cancel naming no key, which every model-proxy refused."""
    seen: list[list[str]] = []

    def known(aliases: Iterable[str]) -> None:
        seen.append(list(aliases))

    async with jetstream_server(tmp_path / "js") as (first, server):
        port = first.connected_url.port if first.connected_url else None
        assert port
        asked = asyncio.Event()
        head = await _head(port, _listing("a"), asked)
        # The edge's connection: it reconnects, and buffers nothing while it does.
        tail = await nats.connect(
            f"nats://127.0.0.1:{port}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            pending_size=0,
        )
        llm = LLMClient(tail, accept_timeout=0.5)
        await llm.start()
        watch = AliasWatch(llm, known, every_s=0.1)
        again: asyncio.subprocess.Process | None = None
        try:
            watch.start()
            await until(lambda: ["a"] in seen)
            await head.close()
            server.terminate()
            await server.wait()
            await until(lambda: not tail.is_connected)
            await asyncio.sleep(0.5)  # several asks fail on the NATS connection
            again = await asyncio.create_subprocess_exec(
                *[str(binaries.nats_server()), "-a", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            assert await accepting(port)
            head = await _head(port, _listing("a", "b"), asked)
            await until(lambda: ["a", "b"] in seen)  # it kept asking

            # A head that takes the ask and never answers; the edge stops meanwhile.
            await head.close()
            asked.clear()
            cancels: list[Msg] = []
            head = await _head(port, None, asked)

            async def on_cancel(msg: Msg) -> None:
                cancels.append(msg)

            await head.subscribe(subjects.CANCEL, cb=on_cancel)
            await flushed(head)
            await asyncio.wait_for(asked.wait(), 10)
            await watch.stop()
            await settle(tail)
            await settle(head, 0.5)
            assert cancels == []
        finally:
            await watch.stop()
            await llm.close()
            await tail.close()
            await head.close()
            if again is not None:
                again.terminate()
                await asyncio.wait_for(again.wait(), 10)
