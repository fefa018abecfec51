"""Concurrency slots (``max_parallel``) on a real Valkey: a dead edge's slots run out.

An edge killed with ``kill -9`` (OOM, node loss) never settles its requests. Its slots are
leased: it stops renewing them, and they are free again one lease later, while a live edge's
slots for a long request stay held. The "dead edge" here is a real process holding slots,
SIGKILLed; the lease is shortened to seconds through ``Limiter(lease_s=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from switchyard.errors import RateLimited
from switchyard.limits import keys as rk
from switchyard.limits.limiter import Limiter, Ticket
from switchyard.limits.store import connect_redis
from switchyard.schemas.keys import ClientKey, new_key_id
from tests.support import valkey_server, write_settings

pytestmark = pytest.mark.integration

# A process that takes ``slots`` slots of a key and holds them until it is killed.
_HOLDER = """
import asyncio, sys
from switchyard.config import load_settings
from switchyard.limits.limiter import Limiter
from switchyard.schemas.keys import ClientKey

async def main(config, key_id, parallel, slots, lease):
    limiter = Limiter(load_settings(config, env={}), lease_s=float(lease))
    key = ClientKey(id=key_id, hash="0" * 64, name="held", max_parallel=int(parallel))
    for i in range(int(slots)):
        assert await limiter.admit(key, f"held{i}", 1) is not None
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def valkey(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("slots")
    settings, config = write_settings(home)
    async with valkey_server(settings):
        yield {"settings": settings, "config": config}


@contextlib.asynccontextmanager
async def _holder(config: Path, key: ClientKey, slots: int, lease: float) -> AsyncIterator[None]:
    """An edge process holding ``slots`` slots of ``key``, SIGKILLed when the block is left."""
    args = [config, key.id, key.max_parallel, slots, lease]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, *map(str, args), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"held\n"
        yield
    finally:
        proc.kill()
        await proc.wait()


def _key(parallel: int) -> ClientKey:
    return ClientKey(id=new_key_id(), hash="0" * 64, name="slots", max_parallel=parallel)


async def _refused(limiter: Limiter, key: ClientKey) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(key, "probe", 1)
    assert refused.value.code == "too_many_concurrent_requests"
    return refused.value


async def test_a_killed_edges_slots_free_after_the_lease_a_live_ones_stay_held(
    valkey: dict[str, Any],
) -> None:
    lease = 1.5
    key = _key(2)
    live = Limiter(valkey["settings"], lease_s=lease)
    probe = Limiter(valkey["settings"], lease_s=lease)
    taken: list[Ticket] = []
    try:
        long_request = await live.admit(key, "long", 1)
        assert long_request is not None
        async with _holder(valkey["config"], key, slots=1, lease=lease):
            pass  # kill -9: its slot is never settled nor renewed
        killed = time.monotonic()
        # A live edge's request may end any moment: retry in a second.
        assert (await _refused(probe, key)).retry_after == 1
        while (ticket := await _admitted(probe, key)) is None:
            assert time.monotonic() - killed < lease + 1.5, "the dead edge's slot never freed"
            await asyncio.sleep(0.1)
        taken.append(ticket)
        # Two leases on, the live edge's long request still holds its slot: it was renewed.
        await asyncio.sleep(max(0.0, killed + 2 * lease - time.monotonic()))
        await _refused(probe, key)
    finally:
        for ticket in taken:
            probe.settle(ticket, None)
        await probe.close()
        await live.close()


async def _admitted(limiter: Limiter, key: ClientKey) -> Ticket | None:
    try:
        return await limiter.admit(key, "probe", 1)
    except RateLimited:
        return None


async def test_retry_after_says_when_a_dead_edges_slot_frees(valkey: dict[str, Any]) -> None:
    lease = 4.0  # renewed every 1.33 s; a slot not renewed for 2 s is taken for a dead edge's
    key = _key(1)
    probe = Limiter(valkey["settings"], lease_s=lease)
    try:
        async with _holder(valkey["config"], key, slots=1, lease=lease):
            taken = time.monotonic()
        await asyncio.sleep(2.2)
        refused = await _refused(probe, key)
        left = lease - (time.monotonic() - taken)
        assert refused.retry_after is not None
        assert left - 0.5 <= refused.retry_after <= left + 0.5, (refused.retry_after, left)
        assert "stopped" in refused.message
    finally:
        await probe.close()


async def test_an_edge_shutting_down_frees_the_slots_it_still_holds(
    valkey: dict[str, Any],
) -> None:
    key = _key(1)
    stopping = Limiter(valkey["settings"])
    assert await stopping.admit(key, "cut-short", 1) is not None
    await stopping.close()  # a SIGTERM'd edge whose request was cut: never settled
    probe = Limiter(valkey["settings"])
    try:
        ticket = await probe.admit(key, "next", 1)
        assert ticket is not None
        probe.settle(ticket, None)
    finally:
        await probe.close()


async def test_a_client_sending_one_request_at_a_time_through_two_edges_is_never_refused(
    valkey: dict[str, Any],
) -> None:
    """Each answer's slot is released after its client has it (with the key's next admission
    at that edge, or within the settle delay): the next request, at the other edge at once,
    found the slot still taken (20 of 40 refused in an explorer's run)."""
    edges = [Limiter(valkey["settings"]) for _ in range(2)]
    budgeted = ClientKey(
        id=new_key_id(), hash="0" * 64, name="held", budget_usd=1e-6, budget_period="total"
    )
    try:
        for key in (_key(1), budgeted):
            if key.budget_usd:  # a hold of the whole budget: one request at a time
                ops = connect_redis(valkey["settings"], "ops")
                try:
                    await ops.hset(rk.estimates(key.id), "m", 1000)
                finally:
                    await ops.aclose()
            for i in range(12):
                ticket = await edges[i % 2].admit(key, f"seq{i}", 1, "m")
                assert ticket is not None
                edges[i % 2].settle(ticket, 1)  # the answer is out; its release is queued
    finally:
        for edge in edges:
            await edge.close()
