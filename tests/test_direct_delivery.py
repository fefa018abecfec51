"""Direct delivery (switchyard.bus.direct) and the feeder's mover on a real nats-server.

A direct handler sees a message's raw parts in the read loop, nothing else on the connection
changes (callback subscriptions, requests), publishes arrive as nats-py's would, a reconnect
keeps the handler, and nats-py's public API serves the same calls when its internals are not
the expected ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus.direct import DirectDelivery, header_block, status_of
from switchyard.control.mover import Mover
from switchyard.errors import BusError
from switchyard.runtime.jetstream import StreamRejected
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from tests.support import add_full_subject_stream, flushed, free_port, jetstream_server, until

pytestmark = pytest.mark.integration

Raw = tuple[bytes, bytes, bytes, bytes | None]


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[tuple[NATS, NATS]]:
    """Two connections to one server: the one under test and a plain nats-py one."""
    async with jetstream_server(tmp_path) as (nc, _):
        other = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
        await add_full_subject_stream(nc)
        try:
            yield nc, other
        finally:
            await other.close()


async def _collect(nc: NATS, subject: str) -> list[Msg]:
    """The messages ``nc`` hears on ``subject`` from now on, by nats-py's own path."""
    got: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg)

    await nc.subscribe(subject, cb=on_msg)
    await flushed(nc)
    return got


@pytest_asyncio.fixture(loop_scope="session", params=[True, False], ids=["direct", "nats-py"])
async def attached(
    served: tuple[NATS, NATS], request: pytest.FixtureRequest
) -> tuple[NATS, NATS, DirectDelivery]:
    """``served`` with direct delivery on the first connection, by the direct path or by
    nats-py's public API (what attach falls back to on another nats-py)."""
    nc, other = served
    if not request.param:
        return nc, other, DirectDelivery(nc, None)
    direct = await DirectDelivery.attach(nc)
    assert direct.direct, "nats-py's internals are not the expected ones"
    return nc, other, direct


async def test_a_handler_gets_raw_parts_and_the_rest_of_the_connection_is_untouched(
    attached: tuple[NATS, NATS, DirectDelivery],
) -> None:
    nc, other, direct = attached
    seen: list[Raw] = []
    sub = await direct.subscribe("raw.>", lambda *parts: seen.append(parts))
    plain = await _collect(nc, "plain.>")

    async def pong(msg: Msg) -> None:
        await msg.respond(b"pong")

    await other.subscribe("svc", cb=pong)
    await flushed(nc)
    await flushed(other)

    await other.publish("raw.a", b"one", reply="back.1", headers={"X-K": "v"})
    await other.publish("raw.b", b"two")
    await other.publish("plain.c", b"three", headers={"X-K": "w"})
    await other.flush()
    await until(lambda: len(seen) == 2 and len(plain) == 1, 5)
    assert seen[0][:3] == (b"raw.a", b"back.1", b"one")
    assert seen[0][3] is not None
    assert b"X-K: v" in seen[0][3]
    assert seen[1] == (b"raw.b", b"", b"two", None)
    assert plain[0].data == b"three"
    assert plain[0].headers == {"X-K": "w"}
    assert (await nc.request("svc", b"ping", timeout=5)).data == b"pong"

    await direct.unsubscribe(sub)
    await other.publish("raw.a", b"gone")
    await flushed(other)  # the server has routed "gone" ...
    await flushed(nc)  # ... and nc has read what the server sent it before this answer
    assert len(seen) == 2


async def test_publishes_arrive_as_nats_py_sends_them(
    attached: tuple[NATS, NATS, DirectDelivery],
) -> None:
    _, other, direct = attached
    got = await _collect(other, "out.>")
    direct.publish("out.h", b"with headers", "reply.to", header_block({"A": "1", "B-C": "x y"}))
    direct.publish("out.p", b"plain")
    direct.publish("out.e", b"", "r")
    await until(lambda: len(got) == 3, 5)
    by = {m.subject: m for m in got}
    assert by["out.h"].data == b"with headers"
    assert by["out.h"].reply == "reply.to"
    assert by["out.h"].headers == {"A": "1", "B-C": "x y"}
    assert by["out.p"].data == b"plain"
    assert not by["out.p"].headers
    assert not by["out.p"].reply
    assert by["out.e"].data == b""
    assert by["out.e"].reply == "r"


async def test_a_failing_handler_loses_its_message_not_the_connection(
    served: tuple[NATS, NATS],
) -> None:
    """nats-py's read loop stops for good on an exception: a handler's must not reach it."""
    nc, other = served
    direct = await DirectDelivery.attach(nc)
    seen: list[bytes] = []

    def fragile(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if data == b"bad":
            raise ValueError("a handler bug")
        seen.append(data)

    await direct.subscribe("raw", fragile)
    await flushed(nc)
    for data in (b"one", b"bad", b"two"):
        await other.publish("raw", data)
    await other.flush()
    await until(lambda: seen == [b"one", b"two"], 5)
    assert (await nc.request("$JS.API.INFO", b"", timeout=5)).data  # still reading


async def test_direct_and_nats_py_publishes_keep_their_order(served: tuple[NATS, NATS]) -> None:
    nc, other = served
    direct = await DirectDelivery.attach(nc)
    heard = await _collect(other, "seq")
    for n in range(50):
        if n % 2:
            direct.publish("seq", str(n).encode())
        else:
            await nc.publish("seq", str(n).encode())
    await until(lambda: len(heard) == 50, 5)
    assert [m.data for m in heard] == [str(n).encode() for n in range(50)]


class _OwnReference:
    """A parser's view of the client that keeps its own ``_process_msg`` (as a later nats-py
    might): a method installed on the client is then never called."""

    def __init__(self, nc: NATS, process: Any) -> None:
        self._nc, self._process_msg = nc, process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)


async def test_attach_falls_back_when_messages_do_not_come_through_it(
    served: tuple[NATS, NATS],
) -> None:
    nc, other = served
    client: Any = nc
    client._ps.nc = _OwnReference(nc, client._process_msg)
    direct = await DirectDelivery.attach(nc, check_s=0.5)
    assert not direct.direct  # its own message never arrived: nats-py's public API instead
    seen: list[bytes] = []
    await direct.subscribe("raw", lambda s, r, data, h: seen.append(data))
    await flushed(nc)
    await other.publish("raw", b"still heard")
    await other.flush()
    await until(lambda: seen == [b"still heard"], 5)


@contextlib.asynccontextmanager
async def _restartable(store: Path, port: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A nats-server on ``port``; yields a coroutine function that restarts it."""

    async def spawn() -> asyncio.subprocess.Process:
        server = await asyncio.create_subprocess_exec(
            str(binaries.nats_server()),
            *["-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await accepting(port)
        return server

    current = [await spawn()]

    async def restart() -> None:
        current[0].terminate()
        await current[0].wait()
        current[0] = await spawn()

    try:
        yield restart
    finally:
        current[0].terminate()
        await current[0].wait()


async def test_a_direct_handler_survives_a_reconnect(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    seen: list[bytes] = []
    async with _restartable(tmp_path, port) as restart:
        nc = await nats.connect(url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
        try:
            direct = await DirectDelivery.attach(nc)
            await direct.subscribe("raw", lambda s, r, data, h: seen.append(data))
            await nc.flush()
            reconnects = nc.stats["reconnects"]
            await restart()
            await until(lambda: nc.stats["reconnects"] > reconnects and nc.is_connected, 10)
            await nc.flush()  # its SUB went out again before this PING
            other = await nats.connect(url)
            await other.publish("raw", b"after")
            await other.close()
            await until(lambda: seen == [b"after"], 5)
        finally:
            await nc.close()


async def _outcome(
    mover: Mover, subject: str, msg_id: str, *, duplicate: bool = False
) -> BusError | None:
    outcomes: list[tuple[BusError | None, bool]] = []
    mover.move(
        subject,
        b"x",
        header_block({"Nats-Msg-Id": msg_id}),
        lambda error, dup: outcomes.append((error, dup)),
    )
    await until(lambda: len(outcomes) >= 1, 5)
    await asyncio.sleep(0.1)
    assert len(outcomes) == 1, "a move was settled twice"
    assert outcomes[0][1] is duplicate
    return outcomes[0][0]


async def test_a_move_is_settled_once_stored_refused_or_unanswered(
    served: tuple[NATS, NATS],
) -> None:
    nc, other = served
    mover = Mover(nc, await DirectDelivery.attach(nc))
    await mover.start()
    try:
        assert await _outcome(mover, "t.a", "one") is None
        assert (await nc.jetstream().stream_info("T")).state.messages == 1
        # A duplicate: stored already, and said so.
        assert await _outcome(mover, "t.a", "one", duplicate=True) is None
        refused = await _outcome(mover, "t.a", "two")  # the subject is full: discard-new
        assert isinstance(refused, StreamRejected)
        nobody = await _outcome(mover, "nowhere.a", "three")  # no stream: the 503 status
        assert isinstance(nobody, BusError)
        assert not isinstance(nobody, StreamRejected)

        silent: list[BusError | None] = []
        await other.subscribe("mute.>")  # hears (no "no responders"), never answers
        await flushed(other)
        mover.move("mute.a", b"x", header_block({}), lambda error, _: silent.append(error))
        await asyncio.sleep(0.2)
        assert silent == []
        assert len(mover) == 1
        mover.expire(asyncio.get_running_loop().time() + 60)
        assert len(silent) == 1
        assert isinstance(silent[0], BusError)

        mover.move("mute.b", b"x", header_block({}), lambda error, _: silent.append(error))
    finally:
        await mover.stop(grace=0.2)
    assert len(silent) == 2
    assert isinstance(silent[1], BusError)
    assert len(mover) == 0
    assert (await nc.jetstream().stream_info("T")).state.messages == 1


def test_status_of_reads_the_status_line_only() -> None:
    assert status_of(b"NATS/1.0 503\r\n\r\n") == b"503"
    assert status_of(header_block({}, "100")) == b"100"
    assert status_of(b"NATS/1.0\r\nStatus: 503\r\n\r\n") == b""
    assert status_of(None) == b""
