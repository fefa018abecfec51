"""Budget holds on a real Valkey: requests in flight hold their estimated cost.

Accounting learns what one request of a key and model costs (``RECORD``); the edge's limiter
holds that much of the key's budget while a request runs (``ADMIT``) and frees it when the
request ends (``SETTLE``) or when its edge dies (the lease of the in-flight set). Each role
may do only its part (the ACL of ``stack/valkey.py``).
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
import redis.asyncio
import redis.exceptions

from switchyard.errors import RateLimited
from switchyard.limits import keys as rk
from switchyard.limits.limiter import Limiter, Ticket
from switchyard.limits.scripts import RECORD
from switchyard.limits.store import connect_redis
from switchyard.schemas.keys import ClientKey, new_key_id
from tests.support import valkey_server, write_settings

pytestmark = pytest.mark.integration

MODEL = "held-model"
BUDGET_NANO = 1000  # $0.000001
HOLD = 250  # the key's estimate: four requests in flight hold the whole budget

# A process that takes ``count`` holds of a budget key and keeps them until it is killed.
_HOLDER = """
import asyncio, sys
from switchyard.config import load_settings
from switchyard.limits.limiter import Limiter
from switchyard.schemas.keys import ClientKey

async def main(config, key_id, count, lease, model):
    limiter = Limiter(load_settings(config, env={}), lease_s=float(lease))
    key = ClientKey(id=key_id, hash="0" * 64, name="held", budget_usd=1e-6, budget_period="total")
    for i in range(int(count)):
        assert await limiter.admit(key, f"held{i}", 1, model) is not None
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def valkey(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("holds")
    settings, config = write_settings(home)
    async with valkey_server(settings):
        ops = connect_redis(settings, "ops")
        try:
            yield {"settings": settings, "config": config, "ops": ops}
        finally:
            await ops.aclose()


def _key(**fields: Any) -> ClientKey:
    return ClientKey(
        id=new_key_id(),
        hash="0" * 64,
        name="holds",
        budget_usd=BUDGET_NANO / rk.NANO,
        budget_period="total",
        **fields,
    )


async def _learnt(ops: redis.asyncio.Redis, key: ClientKey, hold: int = HOLD) -> None:
    """What accounting would have learnt: the key's cost of a request of MODEL, and a dearer
    platform-wide one (the key's own wins)."""
    await ops.hset(rk.estimates(key.id), MODEL, hold)
    await ops.hset(rk.platform_estimates(), MODEL, hold * 2)


async def _refused(limiter: Limiter, key: ClientKey, model: str = MODEL) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(key, "probe", 1, model)
    return refused.value


async def _held(ops: redis.asyncio.Redis, key: ClientKey) -> int:
    return int(await ops.hget(rk.holds(key.id), "_sum") or 0)


async def _until_held(ops: redis.asyncio.Redis, key: ClientKey, value: int) -> None:
    """Wait until the settles sent (with the flush, within milliseconds) leave ``value`` held."""
    deadline = time.monotonic() + 10
    while await _held(ops, key) != value:
        assert time.monotonic() < deadline, await ops.hgetall(rk.holds(key.id))
        await asyncio.sleep(0.02)


async def test_requests_in_flight_hold_the_budget_and_settling_frees_it(
    valkey: dict[str, Any],
) -> None:
    ops = valkey["ops"]
    key = _key()
    await _learnt(ops, key)
    limiter = Limiter(valkey["settings"])
    try:
        # Nothing spent: admitted while the holds of those in flight stay under the budget.
        tickets = [await limiter.admit(key, f"r{i}", 1, MODEL) for i in range(4)]
        assert await _held(ops, key) == 4 * HOLD
        refused = await _refused(limiter, key)
        assert refused.code == "budget_exceeded"
        assert refused.type == "insufficient_quota"
        assert refused.retry_after == 1  # a total budget, but running requests end soon
        assert "held by 4 requests still running" in refused.message, refused.message
        assert "(spent $0, held ~$0.000001)" in refused.message, refused.message
        # A model of no estimate holds nothing, but is refused while the budget is held too.
        await _refused(limiter, key, "never-seen")
        # Two end: their holds free (with the next admission, or the flush).
        for ticket in tickets[:2]:
            assert ticket is not None
            limiter.settle(ticket, None)
        await _until_held(ops, key, 2 * HOLD)
        again = await limiter.admit(key, "again", 1, MODEL)
        assert again is not None
        for ticket in [*tickets[2:], again]:
            assert ticket is not None
            limiter.settle(ticket, None)
        await _until_held(ops, key, 0)
        assert await ops.zcard(rk.parallel(key.id)) == 0
    finally:
        await limiter.close()


async def test_spend_counts_with_the_holds_and_a_lone_request_sees_only_spend(
    valkey: dict[str, Any],
) -> None:
    ops = valkey["ops"]
    key = _key()
    await ops.hset(rk.platform_estimates(), "platform-only", 300)  # the key's own: none yet
    spend = rk.budget(key.id, "all")
    await ops.set(spend, 500)
    limiter = Limiter(valkey["settings"])
    try:
        # The platform's estimate: 500 + 0, then 500 + 300 held, are under 1000.
        first = await limiter.admit(key, "a", 1, "platform-only")
        second = await limiter.admit(key, "b", 1, "platform-only")
        assert await _held(ops, key) == 600
        refused = await _refused(limiter, key, "platform-only")  # 500 + 600 >= 1000
        assert "held by 2 requests still running" in refused.message, refused.message
        for ticket in (first, second):
            assert ticket is not None
            limiter.settle(ticket, None)
        await _until_held(ops, key, 0)
        # Nothing in flight: a request is admitted while spend is under the budget, as
        # before holds (900 + its own 300 would pass it).
        await ops.set(spend, 900)
        alone = await limiter.admit(key, "c", 1, "platform-only")
        assert alone is not None
        limiter.settle(alone, None)
        await _until_held(ops, key, 0)
        await ops.set(spend, 1000)
        used_up = await _refused(limiter, key, "platform-only")
        assert "is used up" in used_up.message, used_up.message
        assert used_up.retry_after is None  # a total budget: waiting does not help
    finally:
        await limiter.close()


async def test_a_dead_edges_holds_free_after_the_lease_a_live_ones_stay_held(
    valkey: dict[str, Any],
) -> None:
    lease = 1.5
    ops = valkey["ops"]
    key = _key()
    await _learnt(ops, key)
    live = Limiter(valkey["settings"], lease_s=lease)
    probe = Limiter(valkey["settings"], lease_s=lease)
    taken: list[Ticket] = []
    try:
        for i in range(3):
            ticket = await live.admit(key, f"long{i}", 1, MODEL)
            assert ticket is not None
            taken.append(ticket)
        async with _holder(valkey["config"], key, count=1, lease=lease):
            pass  # kill -9: its hold is never settled nor renewed
        killed = time.monotonic()
        assert "held by 4 requests" in (await _refused(probe, key)).message
        while (ticket := await _admitted(probe, key)) is None:
            assert time.monotonic() - killed < lease + 1.5, "the dead edge's hold never freed"
            await asyncio.sleep(0.1)
        assert await _held(ops, key) == 4 * HOLD  # the dead one's out, the new one's in
        # Two leases on, the live edge's requests still hold theirs: renewed, with the hash.
        await asyncio.sleep(max(0.0, killed + 2 * lease - time.monotonic()))
        assert "held by 4 requests" in (await _refused(probe, key)).message
        probe.settle(ticket, None)
    finally:
        for ticket in taken:
            live.settle(ticket, None)
        await probe.close()
        await live.close()
    assert await _held(valkey["ops"], key) == 0


async def _admitted(limiter: Limiter, key: ClientKey) -> Ticket | None:
    try:
        return await limiter.admit(key, "probe", 1, MODEL)
    except RateLimited:
        return None


async def test_max_parallel_counts_the_same_with_a_budget(valkey: dict[str, Any]) -> None:
    ops = valkey["ops"]
    key = ClientKey(id=new_key_id(), hash="0" * 64, name="both", max_parallel=2, budget_usd=1.0)
    await _learnt(ops, key, hold=1)
    limiter = Limiter(valkey["settings"])
    try:
        tickets = [await limiter.admit(key, f"r{i}", 1, MODEL) for i in range(2)]
        assert (await _refused(limiter, key)).code == "too_many_concurrent_requests"
        for ticket in tickets:
            assert ticket is not None
            limiter.settle(ticket, None)
        await _until_held(ops, key, 0)
        assert await _admitted(limiter, key) is not None
    finally:
        await limiter.close()


async def test_each_role_may_do_only_its_part(valkey: dict[str, Any]) -> None:
    """Accounting writes the estimates, the ingress reads them and writes its holds; neither
    writes the other's (the batch runner's role, which logs in without a client name, is
    tested in test_batch_budget)."""
    settings = valkey["settings"]
    estimates = rk.estimates(new_key_id())
    holds = rk.holds(new_key_id())
    roles = {r: connect_redis(settings, r) for r in ("ingress", "accounting")}
    try:
        await roles["accounting"].hset(estimates, MODEL, 5)
        assert await roles["ingress"].hget(estimates, MODEL) == b"5"
        await roles["ingress"].hset(holds, "m", 5)
        denied = [
            roles["ingress"].hset(estimates, MODEL, 6),
            roles["ingress"].hset(rk.platform_estimates(), MODEL, 6),
            roles["accounting"].hset(holds, "m", 6),
            roles["accounting"].hget(holds, "m"),
        ]
        for call in denied:
            with pytest.raises(redis.exceptions.NoPermissionError):
                await call
    finally:
        for client in roles.values():
            await client.aclose()


async def _record(accounting: redis.asyncio.Redis, key_id: str, cost: int, event: str) -> list[int]:
    """One usage batch of one event, as ``Accounting._apply`` lays out the ``RECORD`` call."""
    keys = [
        rk.applied(1, 0),
        rk.once(event),
        rk.once(event),  # its answer key: an answer's is its own
        rk.platform_estimates(),
        rk.budget(key_id, "all"),
        rk.total(key_id),
        rk.day_key("2026-01-01", key_id),
        rk.day_model("2026-01-01", MODEL),
        rk.day_key_model("2026-01-01", key_id, MODEL),
        rk.day_team("2026-01-01", ""),
        rk.day_rank("2026-01-01", "key"),
        rk.day_rank("2026-01-01", "team"),
        rk.day_rank("2026-01-01", "model"),
        rk.estimates(key_id),
        rk.day_deployment("2026-01-01", "fake--m"),
        rk.day_rank("2026-01-01", "deployment"),
    ]
    args: list[int | str] = [
        -1,
        60,
        60,
        60,
        rk.ESTIMATE_TTL_S,
        1,  # events
        1,  # groups
        1,
        cost,
        7,
        2,
        1,  # its deployment group
        0,
        key_id,
        rk.NO_TEAM,
        MODEL,
        "fake--m",
        "fake",
        "m",
    ]
    script = accounting.register_script(RECORD)
    return list(await script(keys=keys, args=args))


async def test_accounting_learns_a_cost_rising_at_once_and_falling_slowly(
    valkey: dict[str, Any],
) -> None:
    ops = valkey["ops"]
    accounting = connect_redis(valkey["settings"], "accounting")
    key_id = new_key_id()
    await ops.delete(rk.platform_estimates())
    try:
        seen: list[int] = []
        for i, cost in enumerate([800, 400, 400, 2000, 2000, 0]):
            assert await _record(accounting, key_id, cost, f"{key_id}:{i}") == [1]
            seen.append(int(await ops.hget(rk.estimates(key_id), MODEL)))
        # Down by an eighth of the gap (800 - 400 // 8 = 750, 750 - 350 // 8 = 707), up at once.
        assert seen == [800, 750, 707, 2000, 2000, 1750]
        assert int(await ops.hget(rk.platform_estimates(), MODEL)) == 1750
        assert 0 < await ops.ttl(rk.estimates(key_id)) <= rk.ESTIMATE_TTL_S
        assert 0 < await ops.ttl(rk.platform_estimates()) <= rk.ESTIMATE_TTL_S
        # An event billed before teaches nothing again.
        assert await _record(accounting, key_id, 9000, f"{key_id}:0") == [0]
        assert int(await ops.hget(rk.estimates(key_id), MODEL)) == 1750
        assert int(await ops.get(rk.total(key_id))) == 5600
    finally:
        await accounting.aclose()


@contextlib.asynccontextmanager
async def _holder(config: Path, key: ClientKey, count: int, lease: float) -> AsyncIterator[None]:
    """An edge process holding ``count`` holds of ``key``, SIGKILLed when the block is left."""
    args = [config, key.id, count, lease, MODEL]
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
