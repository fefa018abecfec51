"""The platform's live state, collected once: queues, traffic, processes.

* **Queues**: every dispatch consumer's state in one JetStream call per second
  (``CONSUMER.LIST``), plus one message lookup per non-empty queue for the age of its oldest
  waiting request. No worker polls anything; a thousand model-proxies cost the same. The age
  of the oldest call in flight (and the longest silence to a caller) comes from the
  model-proxies' heartbeats, which know their calls.
* **Traffic**: the model-proxies' per-second reports (``stats.v1.traffic.*``), added up per
  deployment; percentiles come from the merged bucket counts. The platform's totals of
  requests, errors (5xx) and refusals (429) come from the edges' heartbeats, which count every
  request they answered by status class (``traffic_window`` keeps the points and their rates).
* **Processes**: every process's heartbeat (``stats.v1.process.*``, the edges' through a
  CLIENT stream export), with CPU % from consecutive heartbeats, and whether their versions
  mix in an order the upgrade docs forbid (``upgrade_order``).

It keeps 15 minutes of one-second points per deployment for the UI's charts, and answers the
admin API's overview and history requests from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from switchyard.bus import subjects
from switchyard.config import Settings
from switchyard.control import upgrade_order
from switchyard.control.jsapi import CONSUMER_PAGE, Consumer
from switchyard.control.silent_processes import Process, replaced
from switchyard.control.traffic_window import (
    HISTORY_S,
    Second,
    Series,
    add_counts,
    edge_counts,
    rates,
)
from switchyard.control.usage_lag import UsageLag
from switchyard.errors import BusError
from switchyard.runtime import semconv as sc
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.reporting import HEARTBEAT_S
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.schemas import monitor as m
from switchyard.schemas.routing import RouteTable

log = logging.getLogger("switchyard.control.monitor")

RATE_WINDOW_S = 10  # rates and percentiles in the overview: the last 10 whole seconds
PERCENTILE_WINDOW_S = 60  # how long per-second latency buckets are kept
# A process that went silent without saying goodbye (killed, crashed, frozen, its host lost)
# stays listed as silent until it beats again, is replaced, or for this long at most: it is
# still expected, and switchyard_process_up says 0 (SwitchyardProcessDown) meanwhile. Forgotten
# after 5 minutes, a frozen process left `switchyard top` saying every process was healthy.
FORGET_SILENT_S = 86400.0
USAGE_RETRY_S = 30.0  # after a failed read of accounting's backlog
SILENT_AFTER_S = 3 * HEARTBEAT_S  # no beat for three intervals: silent, not healthy
QUEUES_FRESH_S = 5.0  # a read of the dispatch queues older than this (a failover) says nothing


# ---- JetStream API replies (only the fields used) ----


class _Stored(msgspec.Struct, frozen=True):
    time: str = ""
    seq: int = 0


class _StoredReply(msgspec.Struct, frozen=True):
    message: _Stored | None = None


_STORED = msgspec.json.Decoder(_StoredReply)
_JSON = msgspec.json.Encoder()


def parse_time(text: str) -> float | None:
    """Unix seconds of JetStream's RFC 3339 time (nanosecond fractions), or None."""
    if not text:
        return None
    head, _, rest = text.partition(".")
    fraction = rest.rstrip("Z")[:6] if rest else ""
    try:
        moment = dt.datetime.fromisoformat(head + (f".{fraction}" if fraction else "") + "+00:00")
    except ValueError:
        return None
    return moment.timestamp()


class Monitor:
    """Collects and serves the platform's live state (see the module docstring)."""

    def __init__(
        self,
        nc: NATS,
        settings: Settings,
        metrics: Metrics,
        table: Callable[[], RouteTable],
        cooldowns: Cooldowns,
        *,
        interval: float = 1.0,
        held: Callable[[str], tuple[int, float, int]] = lambda _dep: (0, 0.0, 0),
    ) -> None:
        self._nc = nc
        self._limit = settings.streams.dispatch_queue_limit
        self._hold_limit = settings.streams.hold_total_limit
        self._hold_tenant_limit = settings.streams.hold_tenant_limit
        self._table = table
        self._cooldowns = cooldowns
        self._interval = interval
        # Requests of a deployment waiting in HOLD, the oldest's age, the fullest tenant's.
        self._held = held
        self.queues: dict[str, m.QueueState] = {}
        self._fullest: dict[str, int] = {}  # deployment -> the fullest tenant queue in HOLD
        self.queues_read_at = 0.0
        self._series: dict[str, Series] = {}
        self._processes: dict[str, Process] = {}
        self._hearing_since: float | None = None  # when this monitor heard its first beat
        self._sub: Subscription | None = None
        self._loops = TaskSupervisor("monitor")
        self._order = upgrade_order.OrderWatch(log)
        self._forged_warn = Throttle(60.0)
        self.usage = UsageLag(nc, metrics)  # accounting's backlog
        self._usage_warn = Throttle(60.0)
        self._usage_retry_at = 0.0
        self._export(metrics)

    # ---- lifecycle ----

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(subjects.STATS_ALL, cb=self._on_stats)
        await self.collect()
        await self._collect_usage()
        self._loops.spawn(self._collect_forever())

    async def stop(self) -> None:
        await self._loops.cancel_all()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _collect_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.collect()
            except (NatsError, TimeoutError) as exc:  # a failover: keep the last state
                why = str(exc) or type(exc).__name__
                log.warning("could not read the dispatch queues: %s", why)
            except Exception:  # a failed read leaves the last state: log, keep collecting
                log.warning("could not read the dispatch queues", exc_info=True)
            self._order.observe(self.upgrade_order())  # logs when a bad mix starts and ends
            await self._collect_usage()

    async def _collect_usage(self) -> None:
        now = time.monotonic()
        if now < self._usage_retry_at:  # failed lately: the queues' reading comes first
            return
        try:
            await self.usage.collect()
        except (NatsError, TimeoutError, BusError, msgspec.DecodeError) as exc:
            # A failover, no USAGE stream yet, or a read refused by a NATS config older than
            # this version (it waits out its 2 s timeout): the last read stands, and the next
            # try is in USAGE_RETRY_S, not a second, so the queues' reading stays fresh.
            self._usage_retry_at = now + USAGE_RETRY_S
            if self._usage_warn.ready():
                why = str(exc) or type(exc).__name__
                log.warning("could not read accounting's backlog (USAGE consumer): %s", why)

    # ---- queues ----

    async def collect(self) -> None:
        """Read every dispatch consumer's state (and oldest waiting ages) now."""
        consumers = await self._consumers()
        now = time.time()
        calls = self._calls(now)
        states: dict[str, m.QueueState] = {}
        fullest: dict[str, int] = {}
        for consumer in consumers:
            if not consumer.name.startswith(_CONSUMER_PREFIX):
                continue
            deployment = consumer.name[len(_CONSUMER_PREFIX) :]
            oldest = 0.0
            if consumer.num_pending:
                stored = await self._stored_at(consumer, consumer.delivered.stream_seq + 1)
                oldest = max(0.0, now - stored) if stored is not None else 0.0
            # In flight: as the model-proxies' heartbeats last said (none acked-pending: none).
            running = calls.get(deployment) if consumer.num_ack_pending else None
            held, held_oldest, fullest[deployment] = self._held(deployment)
            oldest = max(oldest, held_oldest)
            states[deployment] = m.QueueState(
                waiting=consumer.num_pending + held,
                held=held,
                in_flight=consumer.num_ack_pending,
                concurrency=consumer.config.max_ack_pending,
                limit=self._limit,
                redelivered=consumer.num_redelivered,
                oldest_wait_s=round(oldest, 3),
                oldest_in_flight_s=running.oldest_s if running is not None else 0.0,
                acked=consumer.ack_floor.consumer_seq,
                silent_s=running.silent_s if running is not None else 0.0,
            )
        self.queues, self._fullest = states, fullest
        self.queues_read_at = now
        for deployment, state in states.items():
            point = self._series_of(deployment).at(int(now))
            point.waiting, point.in_flight = state.waiting, state.in_flight

    async def _consumers(self) -> list[Consumer]:
        found: list[Consumer] = []
        subject = f"$JS.API.CONSUMER.LIST.{subjects.DISPATCH_STREAM}"
        while True:
            msg = await self._nc.request(subject, _JSON.encode({"offset": len(found)}), timeout=2)
            page = CONSUMER_PAGE.decode(msg.data)
            if page.error is not None:
                raise RuntimeError(f"JetStream: {page.error.description}")
            batch = page.consumers or []
            found.extend(batch)
            if not batch or len(found) >= page.total:
                return found

    def _calls(self, now: float) -> dict[str, m.CallAges]:
        """Per deployment, its oldest call in flight and longest silence to a caller, across
        the model-proxies heard from lately (their heartbeats carry them: no stored message
        is read; it cost a whole request's read per busy deployment per second, one after
        another, and counted the queue wait in a call's age)."""
        found: dict[str, m.CallAges] = {}
        for proc in self._processes.values():
            if now - proc.seen > SILENT_AFTER_S:
                continue
            for deployment, ages in proc.beat.calls.items():
                had = found.get(deployment)
                if had is None:
                    found[deployment] = ages
                else:
                    found[deployment] = m.CallAges(
                        oldest_s=max(had.oldest_s, ages.oldest_s),
                        silent_s=max(had.silent_s, ages.silent_s),
                    )
        return found

    async def _stored_at(self, consumer: Consumer, seq: int) -> float | None:
        """When the first request of this queue at or after stream sequence ``seq`` was
        stored (``delivered + 1``: the oldest still waiting)."""
        stored = await self._stored(consumer, seq)
        return parse_time(stored.time) if stored is not None else None

    async def _stored(self, consumer: Consumer, seq: int) -> _Stored | None:
        request = {"seq": seq, "next_by_subj": consumer.config.filter_subject}
        subject = f"$JS.API.STREAM.MSG.GET.{subjects.DISPATCH_STREAM}"
        try:
            msg = await self._nc.request(subject, _JSON.encode(request), timeout=2)
            return _STORED.decode(msg.data).message
        except (TimeoutError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        except Exception:  # a NATS error reading one queue's age must not hide the others
            log.debug("could not read the oldest message of %s", consumer.name, exc_info=True)
            return None

    # ---- reports ----

    async def _on_stats(self, msg: Msg) -> None:
        try:
            if msg.subject.startswith(subjects.TRAFFIC_STATS):
                self.add_traffic(m.TRAFFIC.decode(msg.data))
            elif msg.subject.startswith(subjects.PROCESS_STATS):
                beat = m.HEARTBEAT.decode(msg.data)
                # Permissions bind the subject to the sender's identity, not the body: a beat
                # naming another component or instance than its subject is a forgery (a client
                # zone process posing as a head to raise the upgrade-order alert), not a report.
                if msg.subject != subjects.process_stats(beat.component, beat.instance):
                    if self._forged_warn.ready():
                        log.warning(
                            "ignored a heartbeat on %s naming %s/%s",
                            msg.subject,
                            subjects.token(beat.component),
                            subjects.token(beat.instance),
                        )
                    return
                self.add_heartbeat(beat)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignored an unreadable report on %s", msg.subject)

    def add_traffic(self, report: m.TrafficReport) -> None:
        t = int(report.at)
        for sample in report.samples:
            point = self._series_of(sample.deployment).at(t)
            point.requests += sample.requests
            point.errors += sample.errors
            point.input_tokens += sample.input_tokens
            point.output_tokens += sample.output_tokens
            point.latency = add_counts(point.latency, sample.latency)
            point.ttft = add_counts(point.ttft, sample.ttft)
        self._trim(t)

    def add_heartbeat(self, beat: m.Heartbeat, now: float | None = None) -> None:
        now = now or time.time()
        key = f"{beat.component}/{beat.instance}"
        previous = self._processes.get(key)
        cpu = 0.0
        if previous is not None and previous.beat.pid == beat.pid and now > previous.seen:
            used = beat.cpu_seconds - previous.beat.cpu_seconds
            cpu = max(0.0, 100.0 * used / (now - previous.seen))
        if self._hearing_since is None:
            self._hearing_since = now
        # Every running process is heard within a few seconds of control's (re)start: heard
        # then, it counts as known from the start, never as a successor of one of those that
        # beat first (whose last beat may come a moment before its heartbeat's turn).
        first = now if now - self._hearing_since > SILENT_AFTER_S else self._hearing_since
        proc = self._processes[key] = Process(beat, now, first, round(cpu, 2))
        if previous is not None and _same_process(previous.beat, beat):  # heard before
            proc.first_heard, proc.successor = previous.first_heard, previous.successor
        self._edges_seen(beat, previous, now)
        if beat.stopping:  # gone on purpose: not a process that went silent
            del self._processes[key]
            if previous is not None and not _same_process(previous.beat, beat):
                # Two live processes may still share a name (two replicas given the same
                # --instance): one saying goodbye must not take the other's row with it.
                self._processes[key] = previous

    def _edges_seen(self, beat: m.Heartbeat, previous: Process | None, now: float) -> None:
        """Edges count answered requests by status class; the deltas feed the totals."""
        if not beat.requests or previous is None or previous.beat.pid != beat.pid:
            return
        answered = edge_counts(beat.requests, previous.beat.requests)
        point = self._series_of(_EDGES).at(int(now))
        point.requests += answered.requests
        point.errors += answered.errors
        point.refused += answered.refused

    def _series_of(self, deployment: str) -> Series:
        series = self._series.get(deployment)
        if series is None:
            series = self._series[deployment] = Series()
        return series

    def _trim(self, t: int) -> None:
        """Latency buckets are kept for a minute only (the history keeps the counts)."""
        horizon = t - PERCENTILE_WINDOW_S
        for series in self._series.values():
            for point in series.seconds:
                if point.t >= horizon:
                    break
                point.latency = point.ttft = None

    # ---- what the feeder needs ----

    def mean_latency_s(self, deployment: str, now: float | None = None) -> float | None:
        """Mean time per request of a deployment over the overview window (stored to final
        answer, from bucket midpoints), or None without recent answers. Model-proxies time
        answers only: a provider's instant 429s measured a few milliseconds, the feeder kept
        that as the heads' window, and the next burst went to dispatch first come first served
        once the provider was back at its pace."""
        points = self._series_of(deployment).complete(now or time.time(), RATE_WINDOW_S)
        counts: list[int] | None = None
        for p in points:
            if p.latency is not None:
                counts = add_counts(counts, p.latency)
        total = sum(counts or ())
        if not counts or not total:
            return None
        bounds = m.LATENCY_BUCKETS_MS
        ms = sum(c * bounds[i] / 1.22 for i, c in enumerate(counts) if c)  # ~ bucket midpoint
        return ms / total / 1000

    def dispatch_backlog(self, deployment: str, now: float | None = None) -> int:
        """Requests waiting in a deployment's dispatch queue (not HOLD, not in flight) at the
        last read, or 0 when there is no recent read."""
        state = self.queues.get(deployment)
        if state is None or (now or time.time()) - self.queues_read_at > QUEUES_FRESH_S:
            return 0
        return max(0, state.waiting - state.held)

    def heads(self) -> int:
        """Head processes reporting in healthy now."""
        return sum(1 for p in self.processes() if p.component == "head" and p.healthy)

    # ---- views ----

    def processes(self, now: float | None = None) -> list[m.ProcessState]:
        moment = now or time.time()
        self._forget_gone(moment)
        out = []
        for _key, proc in sorted(self._processes.items()):
            age = moment - proc.seen
            beat = proc.beat
            out.append(
                m.ProcessState(
                    component=beat.component,
                    instance=beat.instance,
                    host=beat.host,
                    pid=beat.pid,
                    healthy=beat.ready and age <= SILENT_AFTER_S,
                    ready=beat.ready,
                    cpu_percent=proc.cpu_percent,
                    rss_bytes=beat.rss_bytes,
                    uptime_s=round(moment - beat.started_at, 1) if beat.started_at else 0.0,
                    last_seen_s=round(age, 1),
                    version=beat.version,
                    protocol=beat.protocol,
                )
            )
        return out

    def _forget_gone(self, moment: float) -> None:
        """Drop the silent processes that will not report again: silent for
        :data:`FORGET_SILENT_S`, or replaced (see :func:`.silent_processes.replaced`)."""
        silent = [p for p in self._processes.values() if moment - p.seen > SILENT_AFTER_S]
        gone = {id(p) for p in replaced(silent, self._processes.values())}
        for key, proc in list(self._processes.items()):
            if id(proc) in gone or moment - proc.seen > FORGET_SILENT_S:
                del self._processes[key]

    def upgrade_order(self, now: float | None = None) -> list[m.UpgradeOrderViolation]:
        """Live processes newer than a component the upgrade order says goes first."""
        return upgrade_order.violations(self.processes(now))

    def overview(self, now: float | None = None) -> m.Overview:
        moment = now or time.time()
        table = self._table()
        aliases: dict[str, list[str]] = {}
        for alias, route in table.routes.items():
            for dep in route.deployments:
                aliases.setdefault(dep.id, []).append(alias)
        active = {c.deployment: c for c in self._cooldowns.active(moment)}
        deployments = []
        all_points: list[Second] = []
        for dep_id, (provider, dep) in sorted(table.deployments().items()):
            points = self._series_of(dep_id).complete(moment, RATE_WINDOW_S)
            all_points += points
            cooling = active.get(dep_id)
            deployments.append(
                m.DeploymentState(
                    id=dep_id,
                    provider=dep.provider,
                    kind=provider.kind,
                    model=dep.model,
                    aliases=sorted(aliases.get(dep_id, [])),
                    weight=dep.weight,
                    concurrency=dep.concurrency or provider.concurrency,
                    queue=self.queues.get(dep_id),
                    rates=rates(points, RATE_WINDOW_S),
                    cooldown=m.CooldownState(
                        until=cooling.until,
                        seconds_left=round(cooling.until - moment, 3),
                        status=cooling.status,
                        reason=cooling.reason,
                    )
                    if cooling
                    else None,
                )
            )
        totals = rates(all_points, RATE_WINDOW_S)
        edge_points = self._series_of(_EDGES).complete(moment, RATE_WINDOW_S)
        if edge_points:  # the edges see every request, refusals included
            edges = rates(edge_points, RATE_WINDOW_S, refusals=True)
            totals = msgspec.structs.replace(
                totals,
                requests_per_s=edges.requests_per_s,
                error_ratio=edges.error_ratio,
                refused_ratio=edges.refused_ratio,
            )
        processes = self.processes(moment)
        return m.Overview(
            at=round(moment, 3),
            deployments=deployments,
            processes=processes,
            totals=totals,
            upgrade_order=upgrade_order.violations(processes),
        )

    def history(self, seconds: int = HISTORY_S, now: float | None = None) -> m.History:
        moment = now or time.time()
        span = max(1, min(seconds, HISTORY_S))
        table = self._table()
        out = {
            dep_id: [
                m.HistoryPoint(p.t, p.waiting, p.in_flight, p.requests, p.errors)
                for p in self._series_of(dep_id).window(moment, span)
            ]
            for dep_id in table.deployments()
        }
        return m.History(seconds=span, deployments=out)

    # ---- Prometheus ----

    def _export(self, metrics: Metrics) -> None:
        dep = [sc.DEPLOYMENT]

        def gauge(name: str, doc: str, value: Callable[[m.QueueState], float]) -> None:
            metrics.gauge_callback(
                name, doc, dep, lambda: [((d,), value(q)) for d, q in self.queues.items()]
            )

        gauge(sc.QUEUE_WAITING, "Requests waiting in a deployment's queue.", lambda q: q.waiting)
        gauge(sc.QUEUE_IN_FLIGHT, "Requests a deployment is serving now.", lambda q: q.in_flight)
        gauge(
            sc.QUEUE_CONCURRENCY,
            "Most requests a deployment serves at once (every model-proxy together).",
            lambda q: q.concurrency,
        )
        gauge(sc.QUEUE_LIMIT, "Most requests a deployment's queue holds.", lambda q: q.limit)
        gauge(
            sc.QUEUE_IN_DISPATCH,
            "Requests the queue limit counts: waiting in dispatch (not held for fair order) "
            "plus in flight.",
            lambda q: max(0, q.waiting - q.held) + q.in_flight,
        )
        # Fair queueing's bounds (HOLD), so an alert can warn before they refuse: a saturated
        # deployment's new requests wait in HOLD, which switchyard_queue_in_dispatch leaves out.
        gauge(
            sc.QUEUE_IN_HOLD,
            "Requests the hold limit counts: waiting in HOLD for fair order.",
            lambda q: q.held,
        )
        gauge(
            sc.QUEUE_HOLD_LIMIT,
            "Most requests a deployment holds in HOLD (streams.hold_total_limit) before 503 "
            "queue_full.",
            lambda _q: self._hold_limit,
        )
        metrics.gauge_callback(
            sc.QUEUE_HOLD_TENANT_MAX,
            "Requests in a deployment's fullest tenant queue in HOLD (one tenant, one priority).",
            dep,
            lambda: [((d,), float(self._fullest.get(d, 0))) for d in self.queues],
        )
        gauge(
            sc.QUEUE_HOLD_TENANT_LIMIT,
            "Most requests one tenant queue holds in HOLD (streams.hold_tenant_limit) before "
            "429 tenant_queue_full.",
            lambda _q: self._hold_tenant_limit,
        )
        gauge(
            sc.QUEUE_REDELIVERED,
            "Requests delivered more than once and not yet finished.",
            lambda q: q.redelivered,
        )
        gauge(
            sc.QUEUE_OLDEST_AGE,
            "Seconds the oldest waiting request of a deployment has waited.",
            lambda q: q.oldest_wait_s,
        )
        metrics.counter_callback(
            sc.QUEUE_ACKED,
            "Deliveries a deployment's consumer has acknowledged up to (its ack floor, by "
            "consumer sequence): a request delivered more than once counts once per delivery.",
            dep,
            lambda: [((d,), float(q.acked)) for d, q in self.queues.items()],
        )
        metrics.gauge_callback(
            sc.PROCESS_UP,
            "1 while a process reports in healthy, 0 when it stopped reporting or is not ready.",
            [sc.COMPONENT, sc.INSTANCE],
            lambda: [
                ((p.component, p.instance), 1.0 if p.healthy else 0.0) for p in self.processes()
            ],
        )
        metrics.gauge_callback(
            sc.UPGRADE_ORDER_VIOLATIONS,
            "Live processes of a component upgraded before one it relies on (heads go before "
            "model-proxies); 0 while the order holds.",
            [sc.COMPONENT],
            lambda: [
                ((c,), float(n))
                for c, n in upgrade_order.ahead_by_component(self.upgrade_order()).items()
            ],
        )


_CONSUMER_PREFIX = subjects.dispatch_consumer("")
_EDGES = "\x00edges"  # the series of edge request counts (never a deployment id)


def _same_process(a: m.Heartbeat, b: m.Heartbeat) -> bool:
    """Whether two beats come from one process (not two replicas sharing an instance name)."""
    return (a.host, a.pid, a.started_at) == (b.host, b.pid, b.started_at)
