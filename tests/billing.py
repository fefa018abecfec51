"""What was billed, read from the platform itself: the USAGE stream and accounting's counters.

Used by the failover suite, on the host for a local stack and inside a container on the core
network for compose (``python -m tests.billing last-seq|snapshot KEY_ID FIRST_SEQ``, settings
from ``SWITCHYARD_*``), so both read the same way. Connects as the provisioner (JetStream API)
and the Valkey ``ops`` user: test-only credentials no service holds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.config import Settings, load_settings
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.store import connect_redis
from switchyard.schemas.events import (
    USAGE_BATCH_DECODER,
    USAGE_BATCH_ENCODER,
    UsageBatch,
    UsageEvent,
)

QUIET_S = 6.0


async def last_seq(settings: Settings) -> int:
    nc = await connect(settings.nats_servers, settings.certs_dir, "provisioner")
    try:
        info = await nc.jetstream(timeout=5).stream_info(subjects.USAGE_STREAM)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def snapshot(
    settings: Settings, key_id: str, first_seq: int, timeout: float = 90
) -> dict[str, Any]:
    """Once accounting is idle: every usage event of ``key_id`` after ``first_seq``, and the
    key's daily spend counters (:func:`day_counters`).

    Idle means nothing queued in DISPATCH, every USAGE message applied, and no new one for
    QUIET_S (a batch being re-published is stored within its publisher's confirm timeout).
    """
    nc = await connect(settings.nats_servers, settings.certs_dir, "provisioner")
    events: list[dict[str, Any]] = []
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + timeout
        quiet_since, seen = time.monotonic(), -1
        while True:
            consumer = await js.consumer_info(subjects.USAGE_STREAM, "accounting")
            dispatch = await js.stream_info(subjects.DISPATCH_STREAM)
            usage_seq = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
            if usage_seq != seen:
                quiet_since, seen = time.monotonic(), usage_seq
            idle = consumer.num_pending == 0 and consumer.num_ack_pending == 0
            if idle and dispatch.state.messages == 0 and time.monotonic() - quiet_since > QUIET_S:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"accounting did not catch up in {timeout:.0f} s")
            await asyncio.sleep(0.5)
        for seq in range(first_seq + 1, seen + 1):
            try:
                msg = await js.get_msg(subjects.USAGE_STREAM, seq)
            except NotFoundError:
                continue
            for event in USAGE_BATCH_DECODER.decode(msg.data or b"").events:
                if event.key_id == key_id:
                    events.append(
                        {
                            "id": event.id,
                            "request_id": event.request_id,
                            "tokens": [event.prompt_tokens, event.completion_tokens],
                        }
                    )
    finally:
        await nc.close()
    redis = connect_redis(settings, "ops")
    try:
        fields = await day_counters(redis, key_id)
    finally:
        await redis.aclose()
    spend = [fields.get(f, 0) for f in ("prompt_tokens", "completion_tokens", "requests")]
    return {"events": events, "spend": spend}


async def day_counters(redis: Redis, key_id: str) -> dict[str, int]:
    """``key_id``'s daily spend counters of the last hour's UTC days, summed.

    Accounting files each event under the day it happened, so a run that crosses midnight has
    counters on two days (a CI run once read 0 for a scenario that ended just after midnight).
    The keys are made for each test, so no earlier spend is summed in; a test runs well within
    the hour.
    """
    now = time.time()
    days = {periods.day(now - 3600), periods.day(now)}
    total: dict[str, int] = {}
    for day in sorted(days):
        for name, value in (await redis.hgetall(rk.day_key(day, key_id))).items():
            field = name.decode() if isinstance(name, bytes) else name
            total[field] = total.get(field, 0) + int(value)
    return total


async def publish_usage(
    nc: NATS, batch_id: str, key_id: str, event_id: str, status: int = 200
) -> int:
    """One usage batch of one chat event (10 prompt, 5 completion tokens), as a model-proxy
    publishes it; its stream sequence."""
    event = UsageEvent(
        status=status,
        id=event_id,
        request_id=event_id,
        ts=time.time(),
        op="chat",
        alias="gpt-4o-mini",
        deployment="fake.gpt-4o-mini",
        provider="fake",
        model="gpt-4o-mini",
        key_id=key_id,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
    )
    ack = await nc.jetstream().publish(
        subjects.USAGE,
        USAGE_BATCH_ENCODER.encode(UsageBatch(id=batch_id, events=[event])),
        headers={"Nats-Msg-Id": batch_id},
    )
    return int(ack.seq)


def main(argv: list[str]) -> int:
    settings = load_settings(None)
    if argv[0] == "last-seq":
        print(asyncio.run(last_seq(settings)))
    else:
        print(json.dumps(asyncio.run(snapshot(settings, argv[1], int(argv[2])))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
