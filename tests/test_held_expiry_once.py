"""A held request whose deadline passed is answered once, whatever becomes of the feeder.

The feeder answered a held request past its deadline with a 504 and removed it from HOLD with
its next purge, half a second later. A feeder that died in between (a crash, its connection
lost: no purge) left it in HOLD, and the feeder that took over read it, found it expired and
answered it again; two feeders leading at once (a lease taken over from a stalled one) each
answered it. Now it leaves HOLD first, by a delete only one feeder can make, and only that
feeder answers; the answers are counted (``switchyard_held_expired_total``).

Feeders here run in the test's process on real connections to a real nats-server with the
platform's HOLD stream and saturation bucket; the caller is a plain subscription on the reply
subject the request carries (so every answer sent is seen: no reply mapping drops a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.config import Settings
from switchyard.control.feeder import Feeder
from switchyard.runtime import definitions
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.routing import RouteTable
from tests.support import flushed, jetstream_server, write_settings

pytestmark = pytest.mark.integration

DEP = "p--m"
REPLY = "_R_.caller.one"


class _Bus:
    """The server, a caller listening on :data:`REPLY`, and connections for feeders."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.settings = settings
        self.answers: list[Msg] = []
        self.feeders: list[tuple[Feeder, NATS, Metrics]] = []

    async def connection(self) -> NATS:
        url = self.nc.connected_url.geturl() if self.nc.connected_url else ""
        return await nats.connect(url, max_reconnect_attempts=1)

    async def feeder(self) -> tuple[Feeder, NATS, Metrics]:
        nc = await self.connection()
        metrics = Metrics("control")
        feeder = Feeder(nc, metrics, RouteTable, heads=lambda: 1, latency=lambda _: None)
        self.feeders.append((feeder, nc, metrics))
        return feeder, nc, metrics

    async def hold_expired(self, request_id: str) -> None:
        """A request held for :data:`DEP` whose deadline passed a second ago."""
        headers = {
            h.REQUEST_ID: request_id,
            h.REPLY: REPLY,
            h.DEADLINE: str(int((time.time() - 1) * 1000)),
            "Nats-Msg-Id": request_id,
        }
        await self.nc.jetstream().publish(
            f"{subjects.HOLD_PREFIX}.{DEP}.default.t", b"{}", headers=headers
        )

    def errors(self) -> list[Msg]:
        return [m for m in self.answers if m.data]  # (the terminator is empty)

    async def in_hold(self) -> int:
        info = await self.nc.jetstream().stream_info(subjects.HOLD_STREAM)
        return info.state.messages


@pytest_asyncio.fixture
async def bus(tmp_path: Path) -> AsyncIterator[_Bus]:
    settings, _ = write_settings(tmp_path / "home")
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream()
        await js.add_stream(definitions.hold_stream_config(settings))
        await js.create_key_value(definitions.bucket_config(subjects.SCHED_BUCKET, settings))
        found = _Bus(nc, settings)
        await nc.subscribe(REPLY, cb=_collect(found.answers))
        await flushed(nc)
        try:
            yield found
        finally:
            for feeder, conn, _ in found.feeders:
                await feeder.stop()  # (one that died too: its timers and tasks end)
                await conn.close()


def _collect(into: list[Msg]) -> Callable[[Msg], Awaitable[None]]:
    async def heard(msg: Msg) -> None:
        into.append(msg)

    return heard


def _expired(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        sc.HELD_EXPIRED, {sc.DEPLOYMENT: DEP, sc.PRIORITY: "default"}
    )
    return value or 0.0


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_a_feeder_that_died_after_the_504_leaves_none_to_answer_again(bus: _Bus) -> None:
    first, first_nc, first_metrics = await bus.feeder()
    await first.start()
    await bus.hold_expired("r-crash")
    await _until(lambda: len(bus.errors()) == 1)
    await first_nc.close()  # it dies at once: no stop, no purge (it was due 0.5 s later)
    second, _, second_metrics = await bus.feeder()
    await second.start()  # takes over: reads HOLD from the start
    await asyncio.sleep(2.5)  # two ticks: what it found expired, it would have answered
    (error,) = bus.errors()  # it found nothing: answered once
    body = msgspec.json.decode(error.data)
    assert body["error"]["code"] == "deadline_exceeded", body
    assert "while it was queued" in body["error"]["message"], body
    assert error.headers is not None
    assert error.headers.get(h.REQUEST_ID) == "r-crash"
    assert [m.data for m in bus.answers] == [error.data, b""]  # the 504, then the terminator
    assert await bus.in_hold() == 0
    assert (_expired(first_metrics), _expired(second_metrics)) == (1.0, 0.0)


@pytest.mark.timeout(60)
async def test_two_feeders_reading_one_expired_request_answer_it_once(bus: _Bus) -> None:
    feeders = [await bus.feeder() for _ in range(2)]
    await bus.hold_expired("r-both")
    await asyncio.gather(*(feeder.start() for feeder, _, _ in feeders))
    await _until(lambda: len(bus.errors()) >= 1)
    await asyncio.sleep(2.5)  # both read it (each from the start of HOLD), both ticked
    assert len(bus.errors()) == 1
    assert sorted(_expired(m) for _, _, m in feeders) == [0.0, 1.0]
    assert await bus.in_hold() == 0


@pytest.mark.timeout(60)
async def test_the_counter_shows_every_deployment_at_zero_before_any_expiry(bus: _Bus) -> None:
    feeder, _, metrics = await bus.feeder()
    await feeder.start()
    await bus.hold_expired("r-zero")  # (its deployment is known once held)
    await _until(lambda: _expired(metrics) == 1.0)
    for priority in ("interactive", "batch"):
        labels = {sc.DEPLOYMENT: DEP, sc.PRIORITY: priority}
        assert metrics.registry.get_sample_value(sc.HELD_EXPIRED, labels) == 0.0


def _moves(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        sc.FAIR_MOVES, {sc.DEPLOYMENT: DEP, sc.PRIORITY: "default"}
    )
    return value or 0.0


async def _hold(bus: _Bus, request_id: str) -> None:
    """A request held for :data:`DEP` with no deadline (it is moved once a slot is free)."""
    await bus.nc.jetstream().publish(
        f"{subjects.HOLD_PREFIX}.{DEP}.default.t",
        b"{}",
        headers={h.REQUEST_ID: request_id, "Nats-Msg-Id": request_id},
    )


@pytest.mark.timeout(60)
async def test_the_moves_counter_survives_a_restart_and_skips_duplicates(bus: _Bus) -> None:
    """``switchyard_fair_moves_total`` was kept per run (back to 0 after a stop and start of
    the same process: leadership lost and won) and counted a move dispatch answered as a
    duplicate (moved before, by a feeder before) as a second move."""
    js = bus.nc.jetstream()
    await js.add_stream(definitions.dispatch_stream_config(bus.settings))
    feeder, _, metrics = await bus.feeder()
    await feeder.start()
    await _hold(bus, "r-new")
    await _until(lambda: _moves(metrics) == 1.0)
    await feeder.stop()
    await feeder.start()  # leadership back: the same process's counter must not go back
    assert _moves(metrics) == 1.0
    # Moved by a feeder before, not yet purged from HOLD: dispatch has it already.
    await js.publish(subjects.dispatch(DEP), b"{}", headers={"Nats-Msg-Id": "r-dup"})
    await _hold(bus, "r-dup")
    await _hold(bus, "r-next")
    await _until(lambda: _moves(metrics) >= 2.0)
    await asyncio.sleep(1.0)  # (the duplicate's ack came first: it would count by now)
    assert _moves(metrics) == 2.0
    info = await js.stream_info(subjects.DISPATCH_STREAM)
    assert info.state.messages == 3  # r-new, r-dup once, r-next
