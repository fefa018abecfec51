"""``switchyard serve accounting``: usage events in, spend counters out, each event once.

It pulls batches from the ``USAGE`` stream (durable consumer ``accounting``), prices every
event, groups them by key, budget period, day and model (and apart by day and deployment), and
applies the batch to Redis/Valkey in one ``RECORD`` script call: budget counter of the key's
current period, lifetime total, daily aggregates per key, per model, per key-and-model, per
team and per deployment, each day's ranking of keys, teams, models and deployments by cost
(kept 90 days; the admin's spend pages read only these), and
the estimated cost of one request per key and model and per model (what the edge holds of a
budget while a request runs: ``limits/scripts.py``, ``docs/keys-and-limits.md``). The
same call sets the batch's bit by its stream sequence (a batch is what JetStream redelivers;
a model-proxy's re-publish is deduplicated into the same message), so nothing is counted twice:
one bit per batch, in chunks that expire once the stream can no longer deliver their messages,
kept apart per stream instance (``stream.py``). A batch is acknowledged only after Redis took
it; if Redis is down the batch is redelivered later, so no usage is lost. The ingress compares
the budget counter plus the holds of requests in flight with the key's budget on every
request: the request after the one that crossed it is refused.
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
from switchyard.errors import BusError
from switchyard.limits import keys as rk
from switchyard.limits.scripts import RECORD
from switchyard.limits.store import connect_redis
from switchyard.runtime import semconv as sc
from switchyard.runtime.definitions import ACCOUNTING_CONSUMER, ROUTE_TABLE_KEY
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.metrics import Bounded
from switchyard.runtime.puller import Puller
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas.events import USAGE_BATCH_DECODER, UsageEvent, answer_of
from switchyard.schemas.routing import InvalidRouteTable, RouteTable, decode_route_table
from switchyard.workers.accounting.budget_days import BudgetDays
from switchyard.workers.accounting.loss import LossWatch
from switchyard.workers.accounting.pricing import Pricing
from switchyard.workers.accounting.stream import StreamInstance, UsageStream, place_of

log = logging.getLogger("switchyard.accounting")

RETRY_DELAY_S = 2.0
APPLY_TIMEOUT_S = 20.0
# Batches whose RECORD call failed here, remembered until their retry answers (the newest).
UNSURE_KEPT = 4096
# Which stream a batch came from (stream.py): a batch waits for at most two such answers
# before its Redis call, together still short of the usage consumer's 30 s ack wait.
STREAM_INFO_TIMEOUT_S = 4.0
# The deployment counted for a usage event that names none (an empty ``deployment``).
UNKNOWN_DEPLOYMENT = "unknown"


def served_by(table: RouteTable, alias: str) -> list[str]:
    """Every deployment a request for ``alias`` may be answered by: the alias's own and, depth
    first, its fallbacks' (each alias once; unknown fallbacks skipped)."""
    seen: list[str] = []
    pending = [alias]
    while pending:
        current = pending.pop(0)
        if current in seen or current not in table.routes:
            continue
        seen.append(current)
        pending = list(table.routes[current].fallbacks) + pending
    return [d.id for a in seen for d in table.routes[a].deployments]


class Accounting:
    def __init__(self, nc: NATS, settings: Settings, proc: Process) -> None:
        metrics = proc.metrics
        self.nc = nc
        self.settings = settings
        self.redis = connect_redis(settings, "accounting", patient=True)
        self._record = self.redis.register_script(RECORD)
        self.table = settings.route_table
        self.pricing = Pricing()
        self._days = BudgetDays()
        self._routes = KvFollower(
            nc.jetstream(timeout=5), subjects.ROUTES_BUCKET, self._on_routes, keys=ROUTE_TABLE_KEY
        )
        self.usage_stream = UsageStream.over(nc, subjects.USAGE_STREAM, STREAM_INFO_TIMEOUT_S)
        self._unplaced_warn = Throttle(60.0)
        # A Valkey outage retries every batch every RETRY_DELAY_S: one line per 10 s, not per
        # batch (an explorer's 40 s outage wrote 57), with how many were put off meanwhile.
        self._redis_warn = Throttle(10.0)
        self._put_off = 0
        self.puller = Puller(
            nc,
            "usage",
            64,
            self.handle,
            stream=subjects.USAGE_STREAM,
            consumer=ACCOUNTING_CONSUMER,
        )
        # Batches (stream instance, sequence) whose RECORD call failed here: see _apply.
        self._unsure: dict[tuple[int, int], None] = {}
        self._spend = metrics.counter(
            sc.SPEND,
            "Spend recorded, in US dollars, per model alias and deployment that served it.",
            [sc.ALIAS, sc.DEPLOYMENT],
        )
        batches = metrics.counter(
            sc.USAGE_APPLIED,
            "Usage batches by result (applied, retried later, unreadable and dropped).",
            [sc.RESULT],
        )
        self._batches = {r: batches.labels(r) for r in ("applied", "retried", "unreadable")}
        self._alias = Bounded(500)
        self._deployment = Bounded(500)
        self._zero_spend(self.table)
        lost = metrics.counter(
            sc.USAGE_LOST,
            "Usage batches the USAGE stream removed (full or too old) before accounting applied"
            " them: their requests are not billed. Counted up to: see docs/operations.md.",
        )
        self.loss = LossWatch.over(
            nc, subjects.USAGE_STREAM, ACCOUNTING_CONSUMER, lost, STREAM_INFO_TIMEOUT_S
        )
        self._loops = TaskSupervisor("accounting-loss")
        self.ready = False

    def _on_routes(self, key: str, value: bytes | None, revision: int) -> None:
        if value is None:
            return
        try:
            self.table = decode_route_table(value)
        except InvalidRouteTable as exc:
            log.error("ignored route table revision %d: %s", revision, exc)
            return
        self._zero_spend(self.table)

    def _zero_spend(self, table: RouteTable) -> None:
        """Each alias's spend series at 0 before its first spend: Prometheus takes a series'
        first scraped value as its start, so the first spend of an alias new to this process
        was missing from ``increase()`` (the dashboard's "Spend, last 24h" read $16.43 where
        the spend endpoints said $19.35). One series per alias of the table and deployment
        it may be served by: its own and its fallbacks' (a fallback's deployment spends under
        the alias the client asked for)."""
        for alias in table.routes:
            for dep_id in served_by(table, alias):
                self._spend.labels(self._alias(alias), self._deployment(dep_id))

    async def start(self) -> None:
        await self.pricing.load()
        await self._routes.start()
        # Before the first ack: what the stream removed while accounting was away.
        await self.loss.check()
        self._loops.spawn(self.loss.run())
        await self.puller.start()
        self.ready = True

    async def stop(self, grace: float) -> None:
        self.ready = False
        await self.puller.stop(grace)
        await self._loops.cancel_all()
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
        # Read from the reply subject, not msg.metadata (see stream.place_of).
        place = place_of(msg.reply)
        seq: int | None = None
        stream: StreamInstance | None = None
        if place is None:
            self._warn_unplaced(f"usage batch {batch.id} came without its stream place")
        else:
            seq = place.seq
            if self.loss.after_gap(seq):
                # Before this batch's ack, which would move the consumer's floor past the gap.
                await self.loss.check_gap()
            try:
                stream = await self.usage_stream.instance_of(place.stored_us, place.seq)
            except BusError as exc:
                # Billing goes on, guarded by the events' ids alone (remembered for ONCE_TTL_S:
                # a redelivery after a lost ack comes within seconds), rather than stall every
                # budget until the stream answers (or a NATS config rendered before accounting
                # asked for the stream's info is rendered again: `deploy setup`).
                self._warn_unplaced(str(exc))
                stream = seq = None
        if stream is not None and place is not None and not stream.holds(place.stored_us):
            # Stored before the stream there is now was created: delivered just before its own
            # stream was deleted (or the server's clock went back). Its sequence means nothing
            # in the current stream, so only its events' ids keep it from counting twice.
            log.warning("usage batch %s predates the USAGE stream; billed by event ids", batch.id)
            seq = None
        try:
            await self._apply(stream, seq, batch.events, self.table)
        except (redis.exceptions.RedisError, TimeoutError, OSError) as exc:
            self._put_off += 1
            if self._redis_warn.ready():
                log.warning(
                    "Redis unavailable (%s); usage batches will be retried (%d put off since "
                    "the last such line; spend and budgets wait)",
                    type(exc).__name__,
                    self._put_off,
                )
                self._put_off = 0
            self._batches["retried"].inc()
            await msg.nak(delay=RETRY_DELAY_S)
            return
        self._batches["applied"].inc()
        await msg.ack()

    def _warn_unplaced(self, why: str) -> None:
        """Say (at most once a minute) that batches are billed by their events' ids alone."""
        if self._unplaced_warn.ready():
            log.warning(
                "%s; usage batches are billed by their events' ids alone until it answers"
                " (does the NATS config predate this version? run `switchyard deploy setup`)",
                why,
            )

    async def _apply(
        self,
        stream: StreamInstance | None,
        seq: int | None,
        events: list[UsageEvent],
        table: RouteTable,
    ) -> None:
        """One script call per batch: the batch once by its place ``seq`` in ``stream`` (if
        known), each event once by its id (a request executed twice in a failover is billed
        once), counters per group of events with the same key, period, day, model and team."""
        groups: dict[tuple[str, str, int, str, str, str], int] = {}
        # Per day and deployment (the provider account and model that served), with the
        # provider and model its events name: the spend by deployment.
        deployments: dict[tuple[str, str], tuple[int, str, str]] = {}
        per_event: list[int] = []
        costs: list[tuple[str, str, int]] = []
        now = time.time()
        for event in events:
            key_id = event.key_id or "unknown"
            period_id, period_end = self._days.current(event.budget_period, event.ts)
            ttl = int(period_end - now) + 86400 if period_end != float("inf") else 0
            day = self._days.day(event.ts)
            group = (
                key_id,
                period_id,
                max(0, ttl),
                day,
                event.alias or event.deployment,
                event.tenant or rk.NO_TEAM,
            )
            number = groups.setdefault(group, len(groups) + 1)
            deployment = event.deployment or UNKNOWN_DEPLOYMENT
            served = deployments.get((day, deployment))
            if served is None:
                served = (len(deployments) + 1, event.provider, event.model)
                deployments[(day, deployment)] = served
            cost = self.pricing.cost_nano(event, table)
            costs.append((group[4], deployment, cost))
            per_event += [
                number,
                cost,
                event.prompt_tokens,
                event.completion_tokens,
                served[0],
            ]
        chunk, bit = rk.applied_slot(seq) if seq is not None and stream is not None else (0, -1)
        created_us, max_age_s = (stream.created_us, stream.max_age_s) if stream else (0, 0.0)
        keys = [
            rk.applied(created_us, chunk),
            *(rk.once(e.id) for e in events),
            *(rk.once(answer_of(e.id)) for e in events),
            rk.platform_estimates(),
        ]
        args: list[int | str] = [
            bit,
            rk.applied_ttl_s(max_age_s),
            rk.DAILY_TTL_S,
            rk.ONCE_TTL_S,
            rk.ESTIMATE_TTL_S,
            len(events),
            len(groups),
            *per_event,
        ]
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
                rk.estimates(key_id),
            ]
            args += [ttl, key_id, team, alias]
        for (day, deployment), (_, provider, model) in deployments.items():  # in number order
            keys += [rk.day_deployment(day, deployment), rk.day_rank(day, "deployment")]
            args += [deployment, provider, model]
        place = (created_us, seq) if bit >= 0 and seq is not None else None
        try:
            # Long enough for a slow connect (name lookup included), short of the usage
            # consumer's 30 s ack wait: a batch is redelivered only after this pass gave up.
            async with asyncio.timeout(APPLY_TIMEOUT_S):
                counted = await self._record(keys=keys, args=args)
        except BaseException:
            # The script may run all the same (a stalled Valkey runs what it was sent once it
            # resumes): the retry then finds the batch applied and, without this, the spend
            # metric would never count it (an explorer's Valkey stall lost one request).
            if place is not None:
                self._unsure[place] = None
                while len(self._unsure) > UNSURE_KEPT:
                    del self._unsure[next(iter(self._unsure))]
            raise
        unsure = place is not None and self._unsure.pop(place, False) is None
        if not isinstance(counted, list):  # 0: a batch applied before (a redelivery)
            if not unsure:
                return
            # Applied by this process's own call that timed out, whose counting never came:
            # count it now (its events' once-flags are lost with that answer: all counted).
            counted = [1] * len(events)
        spent: dict[tuple[str, str], int] = {}
        for (alias, deployment, nano), once in zip(costs, counted, strict=True):
            if once:  # 0: this request's usage was counted before (it ran twice)
                spent[(alias, deployment)] = spent.get((alias, deployment), 0) + nano
        for (alias, deployment), nano in spent.items():
            self._spend.labels(self._alias(alias), self._deployment(deployment)).inc(nano / rk.NANO)


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
