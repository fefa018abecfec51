"""Accounting counts spend per deployment (the provider account and model that served), in the
same script call as per key, team and model alias: a route with a primary and a fallback
deployment showed one number for both, so "which provider account costs what" had no answer.

A real nats-server and a real Valkey (with the role ACLs ``switchyard up`` writes); the
accounting service's own message handler applies real deliveries of the USAGE stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from redis.asyncio import Redis

from switchyard.bus import subjects
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.store import connect_redis
from switchyard.runtime import semconv as sc
from switchyard.runtime.definitions import usage_stream_config
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.worker import Process
from switchyard.schemas.events import USAGE_BATCH_ENCODER, UsageBatch, UsageEvent
from switchyard.schemas.routing import Deployment, Price, Provider, Route, RouteTable
from switchyard.workers.accounting.service import Accounting
from tests.support import jetstream_server, valkey_server, write_settings

pytestmark = pytest.mark.integration

PRIMARY = Deployment(
    provider="acct-a", model="gpt", price=Price(input_per_token=1e-6, output_per_token=2e-6)
)
BACKUP = Deployment(
    provider="acct-b", model="gpt", price=Price(input_per_token=3e-6, output_per_token=4e-6)
)
SPARE = Deployment(provider="acct-b", model="gpt-spare")
TABLE = RouteTable(
    providers={
        "acct-a": Provider(kind="openai-compatible", api_base="http://a.invalid/v1"),
        "acct-b": Provider(kind="openai-compatible", api_base="http://b.invalid/v1"),
    },
    routes={
        "chat": Route(deployments=(PRIMARY, BACKUP), fallbacks=("spare",)),
        "spare": Route(deployments=(SPARE,)),
    },
)


@dataclass
class Rig:
    nc: NATS
    ops: Redis
    accounting: Accounting
    metrics: Metrics


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings, _ = write_settings(tmp_path / "home")
    async with valkey_server(settings), jetstream_server(tmp_path / "nats") as (nc, _server):
        js = nc.jetstream()
        await js.add_stream(usage_stream_config(settings))
        await js.add_consumer(
            subjects.USAGE_STREAM,
            ConsumerConfig(durable_name="probe", ack_policy=AckPolicy.EXPLICIT),
        )
        ops = connect_redis(settings, "ops")
        metrics = Metrics("accounting")
        accounting = Accounting(nc, settings, Process(instance="t", metrics=metrics))
        try:
            yield Rig(nc, ops, accounting, metrics)
        finally:
            await accounting.redis.aclose()
            await ops.aclose()


def _event(
    event_id: str, key_id: str, served: Deployment, prompt: int, completion: int
) -> UsageEvent:
    return UsageEvent(
        id=event_id,
        request_id=event_id,
        ts=time.time(),
        op="chat",
        alias="chat",
        deployment=served.id,
        provider=served.provider,
        model=served.model,
        key_id=key_id,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
    )


async def _apply(rig: Rig, batch_id: str, events: list[UsageEvent]) -> None:
    """Publish one usage batch as a model-proxy does and let accounting handle its delivery."""
    await rig.nc.jetstream().publish(
        subjects.USAGE,
        USAGE_BATCH_ENCODER.encode(UsageBatch(id=batch_id, events=events)),
        headers={"Nats-Msg-Id": batch_id},
    )
    subscription = await rig.nc.jetstream().pull_subscribe_bind("probe", subjects.USAGE_STREAM)
    msgs = await subscription.fetch(1, timeout=10)
    assert len(msgs) == 1
    await rig.accounting.handle(msgs[0], "usage")


async def _day(ops: Redis, deployment: str) -> dict[str, str]:
    found = await ops.hgetall(rk.day_deployment(periods.day(time.time()), deployment))
    return {_text(k): _text(v) for k, v in found.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _spend(rig: Rig, deployment: str) -> float | None:
    return rig.metrics.registry.get_sample_value(
        sc.SPEND, {sc.ALIAS: "chat", sc.DEPLOYMENT: deployment}
    )


async def test_spend_is_counted_per_deployment_each_event_once(rig: Rig) -> None:
    rig.accounting.table = TABLE
    rig.accounting._zero_spend(TABLE)  # as a route table revision does
    # Each deployment's series exists before its first spend (Prometheus' increase()).
    assert _spend(rig, PRIMARY.id) == 0
    assert _spend(rig, BACKUP.id) == 0
    # A fallback alias's deployment spends under the alias the client asked for: its series
    # under "chat" exists too (a review found it created at its first spend, so lost).
    assert _spend(rig, SPARE.id) == 0

    await _apply(
        rig,
        "batch-1",
        [
            _event("r1", "key_a", PRIMARY, 10, 5),  # $0.00002
            _event("r2", "key_a", BACKUP, 10, 5),  # $0.00005: the fallback answered
            _event("r3", "key_b", PRIMARY, 100, 0),  # $0.0001
        ],
    )
    # r2 again (a re-sent request) and one more on the backup: r2 is not counted twice.
    await _apply(
        rig, "batch-2", [_event("r2", "key_a", BACKUP, 10, 5), _event("r4", "key_b", BACKUP, 1, 1)]
    )

    primary, backup = await _day(rig.ops, PRIMARY.id), await _day(rig.ops, BACKUP.id)
    assert primary == {
        "cost_nano": "120000",
        "prompt_tokens": "110",
        "completion_tokens": "5",
        "requests": "2",
        "provider": "acct-a",
        "model": "gpt",
    }
    assert backup["requests"] == "2"
    assert backup["cost_nano"] == str(50_000 + 7_000)
    assert (backup["provider"], backup["model"]) == ("acct-b", "gpt")
    ranked = await rig.ops.zrevrange(
        rk.day_rank(periods.day(time.time()), "deployment"), 0, -1, withscores=True
    )
    assert ranked == [(PRIMARY.id.encode(), 120_000.0), (BACKUP.id.encode(), 57_000.0)]
    kept = await rig.ops.ttl(rk.day_deployment(periods.day(time.time()), PRIMARY.id))
    assert 0 < kept <= rk.DAILY_TTL_S
    # The alias's counter holds both, as before.
    alias = await rig.ops.hget(rk.day_model(periods.day(time.time()), "chat"), "cost_nano")
    assert int(alias or 0) == 177_000
    assert _spend(rig, PRIMARY.id) == pytest.approx(120_000 / rk.NANO)
    assert _spend(rig, BACKUP.id) == pytest.approx(57_000 / rk.NANO)
