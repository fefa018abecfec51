"""The model-proxy process: one set of pull loops per routed deployment, following live routes.

It binds to consumers the provisioner created (it has no right to create or change them), fetches
provider keys from the secrets service, and shuts down in order: stop fetching, finish requests
in hand, stop heartbeats, drain the connection, close HTTP pools. It pulls no request before it
knows the cancels the server stored while it was not running (:mod:`.stored_cancels`).

A deployment taken out of the route table keeps its pull loops until its queue is empty: each
request still queued for it goes back to the heads (``deployment_removed``, no cooldown), which
route it by the table as it is now. Stopped at once, they left those requests waiting in the
queue until their deadline, the runbooks' "take it out of the route" included.

A deployment whose provider key cannot be fetched here (Vault down, nothing cached) is not
pulled for a few seconds after each request handed back for it (:mod:`.key_pause`), so the
model-proxies that hold the key take its requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from switchyard.bus import identities, subjects
from switchyard.bus.connect import connect, subscribed
from switchyard.config import Settings
from switchyard.runtime.definitions import DRAIN_ACK_PENDING, ROUTE_TABLE_KEY
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.puller import Puller
from switchyard.runtime.secret_cache import SecretCache
from switchyard.runtime.shutdown import disconnect
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas.monitor import CallAges
from switchyard.schemas.routing import InvalidRouteTable, decode_route_table
from switchyard.workers.modelproxy import probes
from switchyard.workers.modelproxy.cancel_intake import CancelIntake
from switchyard.workers.modelproxy.handler import Handler
from switchyard.workers.modelproxy.heartbeat import Heartbeats
from switchyard.workers.modelproxy.key_pause import KeyPauses
from switchyard.workers.modelproxy.metrics import ProxyMetrics
from switchyard.workers.modelproxy.providers.registry import Adapters
from switchyard.workers.modelproxy.stored_cancels import StoredCancels
from switchyard.workers.modelproxy.traffic import TrafficMeter

log = logging.getLogger("switchyard.modelproxy")

DRAIN_CHECK_S = 1.0  # how often a removed deployment's queue is looked at


class ModelProxy:
    def __init__(self, nc: NATS, settings: Settings, proc: Process | None = None) -> None:
        proc = proc or Process("modelproxy", Metrics("modelproxy"))
        self.nc = nc
        self.settings = settings
        self.js = nc.jetstream(timeout=5)
        self.table = settings.route_table
        mp = settings.modelproxy
        self.keys = SecretCache(nc, ttl=mp.secret_ttl_s)
        self.adapters = Adapters()
        self.stats = ProxyMetrics(proc.metrics)
        self.stats.routed(self.table.deployments())
        self.traffic = TrafficMeter(nc, proc.instance)
        self.heartbeats = Heartbeats(
            nc,
            keepalive_s=mp.keepalive_s,
            progress_s=mp.ack_wait_s / 3,
            probe=probes.probe,
            probe_s=probes.PROBE_S,
        )
        self.instance = proc.instance
        self.signals: NATS | None = None  # progress signals' own connection (see .heartbeat)
        self.internal: NATS | None = None  # internal clients' replies' own (see .heartbeat)
        self.workers: dict[str, Puller] = {}
        # Deployments not pulled for a while: their key cannot be fetched here (key_pause).
        self.key_pauses = KeyPauses(
            self.workers.get, self._secret_of, self.keys.get, shown=self.stats.paused
        )
        self.handler = Handler(
            nc,
            settings=settings,
            adapters=self.adapters,
            keys=self.keys,
            heartbeats=self.heartbeats,
            table=lambda: self.table,
            stats=self.stats,
            traffic=self.traffic,
            tracing=proc.tracing,
            handed_back=self.key_pauses.handed_back,
        )
        self.stats.watch(self.keys, self.handler.usage, self.handler.items)
        self.draining: dict[str, Puller] = {}  # removed deployments whose queue is emptied
        self._drains = TaskSupervisor("drains")
        self._routes = KvFollower(
            self.js, subjects.ROUTES_BUCKET, self._on_routes, keys=ROUTE_TABLE_KEY
        )
        self._sync_lock = asyncio.Lock()
        self._cancels: Subscription | None = None
        self._cancel_checks: Subscription | None = None
        self.stored_cancels = StoredCancels(nc, self.handler.cancels)
        self.cancel_intake = CancelIntake(nc, self.handler.cancels, self.stats.cancel_refused)
        self._catch_up = TaskSupervisor("stored-cancels")
        self.ready = False

    def call_ages(self) -> dict[str, CallAges]:
        """Its calls in flight per deployment, for its heartbeat (see ``Reporter``)."""
        return self.heartbeats.ages()

    def _secret_of(self, dep_id: str) -> str | None:
        target = self.handler.target(dep_id)
        return target.provider.secret if target is not None else None

    async def _on_routes(self, key: str, value: bytes | None, revision: int) -> None:
        if value is None:
            return
        try:
            self.table = decode_route_table(value)
        except InvalidRouteTable as exc:
            log.error("ignored route table revision %d: %s", revision, exc)
            return
        self.stats.routed(self.table.deployments())
        if self.ready:
            await self._sync_workers()

    async def _sync_workers(self) -> None:
        async with self._sync_lock:
            wanted = self.table.deployments()
            self.keys.prefetch({p.secret for p, _ in wanted.values() if p.secret})
            for dep_id in [d for d in self.workers if d not in wanted]:
                puller = self.workers.pop(dep_id)
                log.info(
                    "deployment %s no longer routed; its queued requests go back to the heads",
                    dep_id,
                )
                self.draining[dep_id] = puller
                self.handler.pace.forget(dep_id)
                await self.key_pauses.forget(dep_id)  # bouncing its queue takes no key
                # Rerouting takes no provider call: pull what is queued without waiting behind
                # the calls in hand (control raised the consumer's limit the same way).
                await puller.resize(DRAIN_ACK_PENDING)
                self._drains.spawn(self._drain(dep_id, puller))
            for dep_id, (provider, deployment) in wanted.items():
                concurrency = deployment.concurrency or provider.concurrency
                capacity = min(concurrency, self.settings.modelproxy.max_workers_per_deployment)
                current = self.workers.get(dep_id)
                if current is None and dep_id in self.draining:  # routed again while draining
                    current = self.workers[dep_id] = self.draining.pop(dep_id)
                    await current.resize(capacity)
                if current is None:
                    puller = Puller(self.nc, dep_id, capacity, self.handler.handle)
                    await puller.start()
                    self.workers[dep_id] = puller
                    log.info("serving deployment %s with %d slots", dep_id, capacity)
                elif current.capacity != capacity:
                    await current.resize(capacity)  # no restart: requests in hand carry on
                    log.info("deployment %s now has %d slots", dep_id, capacity)

    async def _drain(self, dep_id: str, puller: Puller) -> None:
        """Keep pulling a removed deployment's queue (its requests are rerouted, its calls
        in hand run to their end) until it is empty twice in a row, then stop its loops;
        unless it is routed again meanwhile. Nothing is left to pull after
        ``streams.dispatch_max_age_s``: the stream drops older requests."""
        loop = asyncio.get_running_loop()
        began, empty = loop.time(), 0
        consumer = subjects.dispatch_consumer(dep_id)
        longest = self.settings.streams.dispatch_max_age_s
        while self.draining.get(dep_id) is puller and loop.time() - began < longest:
            await asyncio.sleep(DRAIN_CHECK_S)
            try:
                info = await self.js.consumer_info(subjects.DISPATCH_STREAM, consumer)
            except NotFoundError:
                break  # the consumer itself is gone: nothing left to pull
            except (NatsError, TimeoutError):
                continue
            left = (info.num_pending or 0) + (info.num_ack_pending or 0)
            empty = empty + 1 if left == 0 else 0
            if empty >= 2:
                break
        if self.draining.get(dep_id) is puller:
            log.info("deployment %s: its queue is empty; stopping its workers", dep_id)
            # Stopped before it leaves `draining`: a shutdown meanwhile still waits for it.
            await puller.stop(self.settings.stack.stop_timeout_s / 2)
            if self.draining.get(dep_id) is puller:
                del self.draining[dep_id]

    def on_reconnect(self) -> None:
        for puller in (*self.workers.values(), *self.draining.values()):
            puller.reset()
        # Key change events sent while the connection was down are lost (core NATS): a key
        # rotated meanwhile must not wait for the next refresh.
        self.keys.recheck()
        # Cancels sent while the connection was down reached the stream, not this process.
        if self.ready and not self._catch_up.closed and not len(self._catch_up):
            self._catch_up.spawn(self.stored_cancels.read())

    async def _connect(self, purpose: str) -> NATS:
        """One more connection as the model-proxy, named for what it carries."""
        return await connect(
            self.settings.nats_servers,
            self.settings.certs_dir,
            identities.MODELPROXY.name,
            name=f"{self.instance}-{purpose}",
            connect_timeout=self.settings.nats.connect_timeout_s,
            reconnect_wait=self.settings.nats.reconnect_wait_s,
        )

    async def start(self) -> None:
        await self.handler.publisher.start()
        await self.keys.start()
        await self._routes.start()
        self.signals = await self._connect("signals")
        self.heartbeats.signals = self.signals
        if self.settings.nats.internal_clients:  # a stalled one holds up no edge's answers
            self.internal = await self._connect("internal")
            self.heartbeats.internal = self.internal
        self.heartbeats.start()
        self.traffic.start()
        # Every model-proxy hears every cancel; the one serving that stream acts on it. Live
        # ones from now on, then those the server stored before; only then is work pulled, so
        # a request whose caller left while no model-proxy ran is dropped like any other.
        self._cancels = await self.nc.subscribe(subjects.CANCEL, cb=self.cancel_intake.on_cancel)
        # One of them (a queue group) counts, logs and answers one that cancels nothing.
        self._cancel_checks = await self.nc.subscribe(
            subjects.CANCEL, queue=subjects.CANCEL_CHECKS_QUEUE, cb=self.cancel_intake.on_check
        )
        await subscribed(self.nc)
        await self.stored_cancels.read()
        await self._sync_workers()
        self.ready = True

    async def stop(self, grace: float) -> None:
        self.ready = False
        await self._routes.stop()
        await self._drains.cancel_all()
        await self._catch_up.cancel_all()
        await self.key_pauses.stop()  # paused pullers stop like the others
        pullers = (*self.workers.values(), *self.draining.values())
        await asyncio.gather(*(w.stop(grace) for w in pullers))
        # Only now: calls still running in the grace period stop when their callers leave.
        for sub in (self._cancels, self._cancel_checks):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self.workers.clear()
        self.draining.clear()
        await self.heartbeats.stop()
        for extra in (self.signals, self.internal):
            if extra is not None:
                await disconnect(extra)
        await self.traffic.stop()
        await self.keys.stop()
        await self.handler.owners.close()  # owner records still being written
        await self.handler.items.close()  # response items still being written
        await self.handler.usage.stop()
        await self.handler.publisher.stop()
        await self.adapters.close()


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.MODELPROXY.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc, proc: ModelProxy(nc, settings, proc),
        on_reconnect=lambda proxy: proxy.on_reconnect(),
    )
