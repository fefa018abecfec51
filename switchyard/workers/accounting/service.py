"""``switchyard serve accounting``: usage events in, spend counters out, each event once.

It pulls batches from the ``USAGE`` stream (durable consumer ``accounting``), prices every
event, groups them by key, budget period, day and model, and applies the batch to Redis/Valkey
in one ``RECORD`` script call: budget counter of the key's current period, lifetime total,
daily aggregates per key, per model, per key-and-model and per team, and each day's ranking of
keys, teams and models by cost (kept 90 days; the admin's spend pages read only these). Each
batch id is remembered (a batch is what JetStream redelivers and what model-proxies
re-publish), so nothing is counted twice. A batch is acknowledged only after Redis took it; if
Redis is down the batch is redelivered later, so no usage is lost. The ingress compares the
budget counter with the key's budget on every request: the request after the one that crossed
it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import identities, subjects
from switchyard.config import Settings
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.scripts import RECORD
from switchyard.limits.store import connect_redis
from switchyard.runtime import semconv as sc
from switchyard.runtime.definitions import ACCOUNTING_CONSUMER, ROUTE_TABLE_KEY
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.metrics import Bounded
from switchyard.runtime.puller import Puller
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas.events import USAGE_BATCH_DECODER, UsageEvent
from switchyard.schemas.routing import InvalidRouteTable, RouteTable, decode_route_table
from switchyard.workers.accounting.pricing import Pricing

log = logging.getLogger("switchyard.accounting")

RETRY_DELAY_S = 2.0
APPLY_TIMEOUT_S = 20.0


class Accounting:
    def __init__(self, nc: NATS, settings: Settings, proc: Process) -> None:
        metrics = proc.metrics
        self.nc = nc
        self.settings = settings
        self.redis = connect_redis(settings, "accounting", patient=True)
        self._record = self.redis.register_script(RECORD)
        self.table = settings.route_table
        self.pricing = Pricing()
        self._routes = KvFollower(
            nc.jetstream(timeout=5), subjects.ROUTES_BUCKET, self._on_routes, keys=ROUTE_TABLE_KEY
        )
        self.puller = Puller(
            nc,
            "usage",
            64,
            self.handle,
            stream=subjects.USAGE_STREAM,
            consumer=ACCOUNTING_CONSUMER,
        )
        self._spend = metrics.counter(
            sc.SPEND, "Spend recorded, in US dollars, per model alias.", [sc.ALIAS]
        )
        batches = metrics.counter(
            sc.USAGE_APPLIED,
            "Usage batches by result (applied, retried later, unreadable and dropped).",
            [sc.RESULT],
        )
        self._batches = {r: batches.labels(r) for r in ("applied", "retried", "unreadable")}
        self._alias = Bounded(500)
        self.ready = False

    def _on_routes(self, key: str, value: bytes | None, revision: int) -> None:
        if value is None:
            return
        try:
            self.table = decode_route_table(value)
        except InvalidRouteTable as exc:
            log.error("ignored route table revision %d: %s", revision, exc)

    async def start(self) -> None:
        await self.pricing.load()
        await self._routes.start()
        await self.puller.start()
        self.ready = True

    async def stop(self, grace: float) -> None:
        self.ready = False
        await self.puller.stop(grace)
        await self._routes.stop()
        await self.redis.aclose()

    async def handle(self, msg: Msg, _name: str) -> None:
        try:
            batch = USAGE_BATCH_DECODER.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            log.warning("terminated an unreadable usage message")
            self._batches["unreadable"].inc()
            await msg.term()
            return
        try:
            await self._apply(batch.id, batch.events, self.table)
        except (redis.exceptions.RedisError, TimeoutError, OSError) as exc:
            log.warning(
                "Redis unavailable (%s); batch %s will be retried", type(exc).__name__, batch.id
            )
            self._batches["retried"].inc()
            await msg.nak(delay=RETRY_DELAY_S)
            return
        self._batches["applied"].inc()
        await msg.ack()

    async def _apply(self, batch_id: str, events: list[UsageEvent], table: RouteTable) -> None:
        """One script call per batch: each event once by its id (a request executed twice in
        a failover is billed once), counters per group of events with the same key, period,
        day, model and team."""
        groups: dict[tuple[str, str, int, str, str, str], int] = {}
        per_event: list[int] = []
        costs: list[tuple[str, int]] = []
        for event in events:
            key_id = event.key_id or "unknown"
            period_id, period_end = periods.current(event.budget_period, event.ts)
            ttl = int(period_end - time.time()) + 86400 if period_end != float("inf") else 0
            group = (
                key_id,
                period_id,
                max(0, ttl),
                periods.day(event.ts),
                event.alias or event.deployment,
                event.tenant or rk.NO_TEAM,
            )
            number = groups.setdefault(group, len(groups) + 1)
            cost = self.pricing.cost_nano(event, table)
            costs.append((group[4], cost))
            per_event += [number, cost, event.prompt_tokens, event.completion_tokens]
        keys = [rk.seen(batch_id), *(rk.once(e.id) for e in events)]
        args: list[int | str] = [rk.DAILY_TTL_S, rk.ONCE_TTL_S, len(events), *per_event]
        for key_id, period_id, ttl, day, alias, team in groups:  # in group-number order
            keys += [
                rk.budget(key_id, period_id),
                rk.total(key_id),
                rk.day_key(day, key_id),
                rk.day_model(day, alias),
                rk.day_key_model(day, key_id, alias),
                rk.day_team(day, team),
                rk.day_rank(day, "key"),
                rk.day_rank(day, "team"),
                rk.day_rank(day, "model"),
            ]
            args += [ttl, key_id, team, alias]
        # Long enough for a slow connect (name lookup included), short of the usage
        # consumer's 30 s ack wait: a batch is redelivered only after this pass gave up.
        async with asyncio.timeout(APPLY_TIMEOUT_S):
            counted = await self._record(keys=keys, args=args)
        if not isinstance(counted, list):  # 0: a batch seen before (a redelivery)
            return
        spent: dict[str, int] = {}
        for (alias, nano), once in zip(costs, counted, strict=True):
            if once:  # 0: this request's usage was counted before (it ran twice)
                spent[alias] = spent.get(alias, 0) + nano
        for alias, nano in spent.items():
            self._spend.labels(self._alias(alias)).inc(nano / rk.NANO)


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.ACCOUNTING.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc, proc: Accounting(nc, settings, proc),
        on_reconnect=lambda accounting: accounting.puller.reset(),  # its pull requests are gone
    )
