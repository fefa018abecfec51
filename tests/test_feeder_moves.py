"""The feeder's moves when the connection cannot take them: a move that fails at once stops the
filling until a retry half a second later (it was popped, failed, queued first again and popped
again in a loop that never yielded, freezing control while disconnected with a full buffer);
the deployment stays held meanwhile, and a stopped feeder retries nothing of its old run."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from switchyard.bus.direct import DirectDelivery, header_block
from switchyard.control.feeder import Feeder
from switchyard.control.held import Held
from switchyard.control.mover import Mover
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.routing import RouteTable
from tests.support import flushed, jetstream_server

pytestmark = pytest.mark.integration


def _held(seq: int) -> Held:
    return Held(
        seq=seq,
        subject="llm.v1.hold.p--m.default.t",
        deployment="p--m",
        priority="default",
        tenant="t",
        label="",
        owner="t",
        headers=header_block({"Nats-Msg-Id": f"r{seq}"}),
        data=b"{}",
        deadline_ms=0,
        stored_at=time.time(),
    )


@pytest.mark.timeout(30)
async def test_a_move_failing_at_once_is_retried_later_not_in_a_loop(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        feeder = Feeder(nc, Metrics("control"), RouteTable, heads=lambda: 1, latency=lambda _: None)
        direct = await DirectDelivery.attach(nc)
        mover = Mover(nc, direct)
        feeder._direct, feeder._mover = direct, mover
        tries: list[float] = []
        move = mover.move

        def counted(*args: Any) -> None:
            tries.append(time.monotonic())
            move(*args)

        mover.move = counted  # type: ignore[method-assign,assignment]
        feeder._running = True  # as start() leaves it (no HOLD to read here)
        dep = feeder._dep("p--m")
        dep.active = True  # slots counted: the feeder fills at once
        for seq in (1, 2, 3):
            dep.queue.push("default", "t", 1.0, _held(seq))
        await nc.close()  # every publish now fails before it is sent

        feeder._feed(dep)  # returned: no busy loop
        assert dep.stalled
        assert len(dep.queue) == 3  # nothing lost: the failed one is first in line again
        assert dep.pending == 0
        assert dep.moving == 0
        first = dep.queue.pop()
        assert first is not None
        assert first.seq == 1
        dep.queue.push_front("default", "t", 1.0, first)

        assert len(tries) == 1
        await asyncio.sleep(1.2)  # retried every half second, one move each time
        assert 2 <= len(tries) <= 4
        assert all(b - a >= 0.45 for a, b in itertools.pairwise(tries))
        assert len(dep.queue) == 3
        assert dep.held  # stalled with work waiting: heads keep parking new requests

        await feeder.stop()  # (leadership lost) no retry of the old run's queue after it
        stopped_at = len(tries)
        await asyncio.sleep(1.2)
        assert len(tries) == stopped_at


@pytest.mark.timeout(30)
async def test_moves_unanswered_at_stop_are_not_retried_by_the_stopped_run(
    tmp_path: Path,
) -> None:
    """Leadership lost while moves wait for their store's answer: the stop settles them as
    failed, and nothing of the old run is queued for a retry (a retry would move the old
    run's stale queue through the next run, outside its count and order)."""
    async with jetstream_server(tmp_path) as (nc, _):
        mute = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
        await mute.subscribe("llm.v1.dispatch.>")  # hears the moves, never answers
        await flushed(mute)
        feeder = Feeder(nc, Metrics("control"), RouteTable, heads=lambda: 1, latency=lambda _: None)
        direct = await DirectDelivery.attach(nc)
        feeder._direct, feeder._mover = direct, Mover(nc, direct)
        await feeder._mover.start()
        feeder._running = True
        dep = feeder._dep("p--m")
        dep.active = True
        for seq in (1, 2):
            dep.queue.push("default", "t", 1.0, _held(seq))
        feeder._feed(dep)
        assert dep.moving == 2  # sent, waiting for an answer that never comes
        await feeder.stop()
        assert dep.moving == 0  # settled by the stop
        assert dep.retry is None
        assert not dep.stalled
        await mute.close()
