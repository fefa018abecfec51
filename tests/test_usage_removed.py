"""Usage batches the USAGE stream removed before accounting applied them are logged and counted.

The stream makes room by removing its oldest messages, applied or not, so usage published
while accounting is stopped or paused past ``streams.usage_max_bytes`` is never billed. That
was silent (an explorer billed 2,330 of 2,500 requests with nothing said); now accounting logs
an error and counts ``switchyard_usage_batches_lost_total``, once per removed range. A real
nats-server and a real Valkey; the accounting service runs whole (its puller included), with a
USAGE stream of 16 KiB so a few dozen batches fill it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from switchyard.bus import subjects
from switchyard.limits.store import connect_redis
from switchyard.runtime.definitions import accounting_consumer_config, usage_stream_config
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.worker import Process
from switchyard.workers.accounting.service import Accounting
from tests.billing import day_counters, publish_usage
from tests.support import jetstream_server, valkey_server, write_settings

pytestmark = pytest.mark.integration

STREAM_BYTES = 16 * 1024
LOST = "switchyard_usage_batches_lost_total"
# Longer than the second accounting spaces its checks on a gap by (loss.GAP_CHECK_EVERY_S).
PAUSE_S = 1.5


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
        await js.add_stream(
            dataclasses.replace(usage_stream_config(settings), max_bytes=STREAM_BYTES)
        )
        await js.add_consumer(subjects.USAGE_STREAM, accounting_consumer_config())
        await js.create_key_value(bucket=subjects.ROUTES_BUCKET)
        ops = connect_redis(settings, "ops")
        metrics = Metrics("accounting")
        accounting = Accounting(nc, settings, Process(instance="t", metrics=metrics))
        try:
            yield Rig(nc, ops, accounting, metrics)
        finally:
            await accounting.stop(5.0)
            await ops.aclose()


async def _publish(nc: NATS, key_id: str, count: int) -> None:
    for i in range(count):
        await publish_usage(nc, f"{key_id}-{i}", key_id, f"{key_id}-{i}")


async def _first_seq(nc: NATS) -> int:
    return int((await nc.jetstream().stream_info(subjects.USAGE_STREAM)).state.first_seq)


def _lost(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(LOST)
    return -1.0 if value is None else value


async def _billed(ops: Redis, key_id: str) -> int:
    return int((await day_counters(ops, key_id)).get("requests", 0))


async def _until_billed(ops: Redis, key_id: str, count: int) -> None:
    async with asyncio.timeout(30):
        while await _billed(ops, key_id) < count:
            await asyncio.sleep(0.1)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_batches_removed_before_accounting_ran_or_while_it_paused_are_reported_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.accounting")
    # Published while accounting is not running: the stream keeps only the newest few dozen.
    await _publish(rig.nc, "key_before", 120)
    first = await _first_seq(rig.nc)
    assert first > 1, "the stream should have removed its oldest batches"
    await rig.accounting.start()
    await _until_billed(rig.ops, "key_before", 120 - (first - 1))
    assert _lost(rig.metrics) == first - 1
    [said] = _errors(caplog)
    assert f"removed up to {first - 1} usage batches (stream sequences 1-{first - 1})" in said
    assert "not billed" in said
    assert "streams.usage_max_bytes" in said
    before = _lost(rig.metrics)

    # Paused while running (as a stopped process), past the second that spaces checks on a
    # gap and short of the steady check: the gap in what it is delivered next is found before
    # its acknowledgement moves the consumer's floor past it.
    caplog.clear()
    await asyncio.sleep(PAUSE_S)
    rig.accounting.puller.pause()
    await _publish(rig.nc, "key_paused", 120)
    removed_from, first = 121, await _first_seq(rig.nc)
    assert first > removed_from
    await rig.accounting.puller.resume()
    await _until_billed(rig.ops, "key_paused", 120 - (first - removed_from))
    assert _lost(rig.metrics) == before + first - removed_from
    [said] = _errors(caplog)
    assert f"up to {first - removed_from} usage batches (stream sequences 121-{first - 1})" in said

    # The same range is never counted twice.
    assert await rig.accounting.loss.check() == 0
    assert _lost(rig.metrics) == before + first - removed_from
    assert _errors(caplog) == [said]
