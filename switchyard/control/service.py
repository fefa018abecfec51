"""``switchyard serve control``: route table changes and deployment status, for admins only.

Endpoints (NATS micro, queue group ``control``, exported to the CLIENT admin identity):

* ``control.v1.admin.routes.get``: the table and its KV revision;
* ``control.v1.admin.routes.put``: replace the table, all or nothing: validated, consumers for
  new deployments provisioned first, then written with compare-and-set so two admins cannot
  overwrite each other (409 on a lost race). The live table sent as it is writes nothing: it
  answers the live revision with ``changed: false``. Heads and model-proxies apply it from
  their watch; a table setting a field that a live process of an older version would refuse
  is not written (503 ``upgrade_unfinished``, ``table_levels``);
* ``control.v1.admin.deployments``: every deployment with its aliases, cooldown and queue depth;
* ``control.v1.admin.cooldowns.clear``: end a deployment's cooldown now.

It also follows ``secrets.v1.changed.*``: when a provider's key is stored or rotated, the
cooldowns of the deployments using it end at once. The new key is the operator's fix for a
provider that refused the old one (401/403), and a key's rate limits are its own, so nothing
it did with the old key needs waiting out; if the provider still fails, it is cooled again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from switchyard.bus import identities, subjects
from switchyard.bus.envelope import new_request_id
from switchyard.config import Settings
from switchyard.control import table_levels
from switchyard.control.feeder import Feeder
from switchyard.control.monitor import Monitor
from switchyard.errors import Conflict, InvalidRequest, ServiceUnavailable
from switchyard.runtime.audit import request_actor
from switchyard.runtime.cooldowns import CooldownBook
from switchyard.runtime.definitions import (
    ROUTE_TABLE_KEY,
    open_removed_consumers,
    sync_dispatch_consumers,
)
from switchyard.runtime.endpoints import Endpoints, reply_ok
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.lease import Lease
from switchyard.runtime.provider_changes import table_words
from switchyard.runtime.shutdown import STOP_STEP_S, within
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.upstreams import table_refusal
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas import control as wire
from switchyard.schemas.events import SecretChanged
from switchyard.schemas.health import PREFIX as COOLDOWN_PREFIX
from switchyard.schemas.monitor import ENCODER, Overview
from switchyard.schemas.routing import (
    InvalidRouteTable,
    RouteTable,
    decode_route_table,
    is_deployment_id,
    route_table_findings,
)
from switchyard.schemas.scheduling import FEEDER_LEASE_KEY

log = logging.getLogger("switchyard.control")

# A route change reaches every model-proxy within milliseconds (a KV watch); this is ample.
OPEN_REMOVED_AFTER_S = 1.0
audit = logging.getLogger("switchyard.control.audit")

Handler = Callable[[Request], Awaitable[None]]


class Control:
    _routes: KeyValue  # the buckets, opened by start() before any request can come
    _health: KeyValue

    def __init__(self, nc: NATS, settings: Settings, proc: Process) -> None:
        metrics = proc.metrics
        self.nc = nc
        self.settings = settings
        self.js = nc.jetstream(timeout=10)
        self.cooldowns = CooldownBook(self.js)
        self.table = settings.route_table
        self._follower = KvFollower(
            self.js, subjects.ROUTES_BUCKET, self._on_routes, keys=ROUTE_TABLE_KEY
        )
        self.monitor = Monitor(
            nc,
            settings,
            metrics,
            lambda: self.table,
            self.cooldowns,
            held=lambda dep: self.feeder.waiting(dep),  # noqa: PLW0108 (the feeder comes next)
        )
        self.feeder = Feeder(
            nc,
            metrics,
            lambda: self.table,
            self.monitor.heads,
            self.monitor.mean_latency_s,
            # Heads ignore "held" with fair queueing off: then dispatch's backlog is not watched.
            backlog=self.monitor.dispatch_backlog if settings.routing.fair_queueing else None,
            queue_limit=settings.streams.dispatch_queue_limit,
            hold_limit=settings.streams.hold_total_limit,
            ingress=settings.ingress,
        )
        self._service: Service | None = None
        self._key_changes: Subscription | None = None
        self._endpoints = Endpoints("control")
        self._write_lock = asyncio.Lock()
        self._instance = proc.instance
        self._lease: Lease | None = None
        self._feeding = False
        self._hearing_since = time.monotonic()  # when the monitor began to hear heartbeats
        self._leading = TaskSupervisor("feeder-lease")
        self._later = TaskSupervisor("removed-consumers")
        self.ready = False

    async def start(self) -> None:
        self._routes = await self.js.key_value(subjects.ROUTES_BUCKET)
        self._health = await self.js.key_value(subjects.HEALTH_BUCKET)
        await self.cooldowns.start()
        await self._follower.start()
        await self.monitor.start()
        self._hearing_since = time.monotonic()
        sched = await self.js.key_value(subjects.SCHED_BUCKET)
        self._lease = Lease(
            sched, FEEDER_LEASE_KEY, f"{self._instance}-{os.getpid()}-{new_request_id()}"
        )
        await self._lead()
        self._leading.spawn(self._lead_forever())
        svc = await add_service(
            self.nc,
            name="control",
            version="1.0.0",
            description="route table and deployments",
            queue_group="control",
        )
        endpoints: dict[str, Handler] = {
            "routes.get": self._get,
            "routes.put": self._put,
            "deployments": self._deployments,
            "overview": self._overview,
            "history": self._history,
            "cooldowns.clear": self._clear,
        }
        for name, handler in endpoints.items():
            await svc.add_endpoint(
                name=name.replace(".", "-"),
                subject=subjects.control_admin(name),
                handler=self._endpoints.wrap(handler),
            )
        self._service = svc
        self._key_changes = await self.nc.subscribe(
            f"{subjects.SECRETS_CHANGED_PREFIX}.*", queue="control", cb=self._on_key_changed
        )
        self.ready = True

    async def stop(self, grace: float) -> None:
        self.ready = False
        if self._key_changes is not None:
            with contextlib.suppress(NatsError):
                await within(STOP_STEP_S, self._key_changes.unsubscribe(), "unsubscribing")
            self._key_changes = None
        if self._service is not None:  # a server gone meanwhile must not hold the stop
            await within(STOP_STEP_S, self._service.stop(), "stopping the NATS service")
            self._service = None
        await self._endpoints.drain(grace)
        await self._leading.cancel_all()
        await self._later.cancel_all()
        if self._feeding:
            self._feeding = False
            await self.feeder.stop()
            if self._lease is not None:
                await self._lease.release()
        await self.monitor.stop()
        await self._follower.stop()
        await self.cooldowns.stop()

    async def _lead(self) -> None:
        """Feed while this replica holds the lease; stop feeding the moment it does not."""
        assert self._lease is not None  # noqa: S101  (made in start)
        leader = await self._lease.renew()
        if leader and not self._feeding:
            await self.feeder.start()
            self._feeding = True
            log.info("this control replica now runs the feeder")
        elif not leader and self._feeding:
            self._feeding = False
            await self.feeder.stop()
            log.warning("lost the feeder lease; another control replica feeds now")

    async def _lead_forever(self) -> None:
        assert self._lease is not None  # noqa: S101
        while True:
            await asyncio.sleep(self._lease.ttl / 3)
            try:
                await self._lead()
            except (NatsError, TimeoutError) as exc:  # a failover: one line, try next round
                log.warning("feeder lease round failed: %s", str(exc) or type(exc).__name__)
            except Exception:  # keep trying: a failed round leaves the lease to expire
                log.exception("feeder lease round failed")

    def _on_routes(self, key: str, value: bytes | None, revision: int) -> None:
        if value is None:
            return
        try:
            self.table = decode_route_table(value)
        except InvalidRouteTable as exc:
            log.error("ignored route table revision %d: %s", revision, exc)

    async def _state(self) -> wire.TableState:
        try:
            entry = await self._routes.get(ROUTE_TABLE_KEY)
        except KeyNotFoundError:
            return wire.TableState(revision=0, table=RouteTable())
        table = decode_route_table(entry.value or b"{}")
        return wire.TableState(revision=entry.revision or 0, table=table)

    async def _get(self, req: Request) -> None:
        await reply_ok(req, wire.ENCODER.encode(await self._state()))

    async def _put(self, req: Request) -> None:
        try:
            put = wire.PUT_TABLE.decode(req.data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise InvalidRequest(f"invalid route table: {exc}") from None
        table = put.table
        data = msgspec.json.encode(table)
        # A table older processes would refuse is judged once every live process was heard.
        await asyncio.sleep(table_levels.settle_s(table, time.monotonic() - self._hearing_since))
        async with self._write_lock:
            current = await self._state()
            # A stale edit is a 409 first: judged against a table its editor never read, its
            # copy of an entry someone fixed meanwhile would read as a change (a 400).
            if put.expected_revision is not None and put.expected_revision != current.revision:
                raise Conflict(
                    f"the route table changed since revision {put.expected_revision} "
                    f"(now {current.revision}); read it again and retry"
                )
            if put.expected_revision is None and not table.routes and current.table.routes:
                # ``{"table": {}}`` (fields left out read as empty) wiped every route.
                raise InvalidRequest(
                    f"this table has no routes: it would delete all {len(current.table.routes)}"
                    f" routes and {len(current.table.providers)} providers. To do that on"
                    f" purpose, send expected_revision: {current.revision} (the revision it"
                    " replaces)",
                    param="table.routes",
                )
            if current.revision and table == current.table:
                # The live table as it is: no new revision (no audit line, no watcher woken,
                # no script's expected_revision made stale). Compared as values: the same
                # table written with its routes in another order (a script's `jq -S`) is it.
                log.info(
                    "route table unchanged at revision %d (%s wrote it as it is)",
                    current.revision,
                    request_actor(req),
                )
                unchanged = wire.TableState(
                    revision=current.revision, table=current.table, changed=False
                )
                await reply_ok(req, wire.ENCODER.encode(unchanged))
                return
            _check_edit(table, current.table, self.settings.modelproxy.allowed_upstreams)
            self._check_readers(table, request_actor(req))
            # Consumers first: a head may dispatch to a new deployment the moment it sees it.
            await sync_dispatch_consumers(self.js, self.settings, table)
            try:
                if current.revision:
                    revision = await self._routes.update(
                        ROUTE_TABLE_KEY, data, last=current.revision
                    )
                else:
                    revision = await self._routes.create(ROUTE_TABLE_KEY, data)
            except KeyWrongLastSequenceError:
                raise Conflict(
                    "the route table changed concurrently; read it again and retry"
                ) from None
        removed = [d for d in current.table.deployments() if d not in table.deployments()]
        if removed:
            self._later.spawn(self._open_removed(removed))
        who = request_actor(req)
        audit.info(
            "route table revision %d by %s: %d providers, %d routes",
            revision,
            who,
            len(table.providers),
            len(table.routes),
        )
        # The audit's words from the table this write replaced (read under the lock above): a
        # caller reading it apart could describe another write's change.
        words = table_words(current.table, table, revision)
        written = wire.TableState(revision=revision, table=table, changed=True, change_words=words)
        await reply_ok(req, wire.ENCODER.encode(written))

    def _check_readers(self, table: RouteTable, who: str) -> None:
        """Refuse a table that a live process of an older version would refuse to read.

        Raises:
            ServiceUnavailable: such a process runs (503: the upgrade is unfinished; the
                same table is accepted once it is, and a 409 reads as a lost race to the
                clients that retry those).
        """
        why = table_levels.refusal(table, self.monitor.processes())
        if why is not None:
            log.warning("refused a route table from %s: %s", who, why)
            raise ServiceUnavailable(why, code="upgrade_unfinished")

    async def _open_removed(self, removed: list[str]) -> None:
        """Let removed deployments' queues be emptied at once, after every model-proxy had
        time to follow the new table (see :func:`open_removed_consumers`)."""
        await asyncio.sleep(OPEN_REMOVED_AFTER_S)
        try:
            await open_removed_consumers(self.js, self.settings, removed)
        except (NatsError, TimeoutError) as exc:  # they drain at their own pace instead
            log.warning("could not open removed deployments' queues: %s", exc)

    async def _deployments(self, req: Request) -> None:
        state = await self._state()
        self.table = state.table  # the freshest, even if the watch has not delivered it yet
        listing = wire.DeploymentList(self._overview_now().deployments)
        await reply_ok(req, wire.ENCODER.encode(listing))

    async def _overview(self, req: Request) -> None:
        await reply_ok(req, ENCODER.encode(self._overview_now()))

    def _overview_now(self) -> Overview:
        """The monitor's overview with the feeder's held queues per deployment."""
        overview = self.monitor.overview()
        deployments = [
            msgspec.structs.replace(
                d, saturated=self.feeder.saturated(d.id), held=self.feeder.held(d.id)
            )
            for d in overview.deployments
        ]
        return msgspec.structs.replace(overview, deployments=deployments)

    async def _history(self, req: Request) -> None:
        try:
            ask = wire.HISTORY_REQUEST.decode(req.data or b"{}")
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise InvalidRequest(f"invalid request: {exc}") from None
        await reply_ok(req, ENCODER.encode(self.monitor.history(ask.seconds)))

    async def _clear(self, req: Request) -> None:
        try:
            ref = wire.DEPLOYMENT_REF.decode(req.data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise InvalidRequest(f"invalid request: {exc}") from None
        if not is_deployment_id(ref.deployment):  # "a..b" is a valid key, not a subject
            raise InvalidRequest(
                "not a deployment id", param="deployment", code="invalid_deployment"
            )
        with contextlib.suppress(KeyNotFoundError):
            await self._health.delete(f"{COOLDOWN_PREFIX}{ref.deployment}")
        audit.info("cooldown of %s cleared by %s", ref.deployment, request_actor(req))
        await reply_ok(req, b'{"cleared":true}')

    async def _on_key_changed(self, msg: Msg) -> None:
        """A provider key was stored or rotated: end its deployments' cooldowns now."""
        try:
            event = _SECRET_CHANGED.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            log.warning("ignored a malformed key change on %s", msg.subject)
            return
        if event.action == "delete":
            return
        cooling = [
            dep_id
            for dep_id, (provider, _) in self.table.deployments().items()
            if provider.secret == event.name and self.cooldowns.cooling(dep_id)
        ]
        for dep_id in cooling:
            try:
                await self._health.delete(f"{COOLDOWN_PREFIX}{dep_id}")
            except KeyNotFoundError:
                continue
            except (NatsError, TimeoutError) as exc:  # it ends on its own when it runs out
                log.warning("could not end the cooldown of %s: %s", dep_id, exc)
                continue
            audit.info("cooldown of %s ended: its provider key %s was replaced", dep_id, event.name)


_SECRET_CHANGED = msgspec.json.Decoder(SecretChanged)


def _check_edit(table: RouteTable, current: RouteTable, upstreams: tuple[str, ...] = ()) -> None:
    """Every head's checks, the newest rules for what the edit adds or changes, and the
    operator's allow-list of provider hosts (``upstreams``) for what it adds or moves.

    A provider or route stored before a rule existed (an ``api_base`` that is no http(s) URL,
    two prices for one deployment) and left as it was does not block an edit elsewhere: it is
    logged, and an edit that touches it must fix it (compare-and-set makes ``current`` the
    table being replaced).

    Raises:
        InvalidRequest: a problem in what the edit adds or changes, or a rule every table
            has always had to meet.
    """
    found = route_table_findings(table, previous=current)
    if found.problems:
        raise InvalidRequest(
            f"invalid route table: {InvalidRouteTable(found.problems)}",
            param=found.problems[0].field,
        )
    refused = table_refusal(table, current, upstreams)
    if refused is not None:  # the control service's settings say it: the admins cannot
        field, why = refused
        raise InvalidRequest(
            f"invalid route table: {why} (an operator setting; its key would be sent there)",
            param=field,
        )
    for kept in found.kept:  # what the newest rules say of the entries left as stored
        # The field and the fix only: a problem may quote the stored URL, credentials and all.
        log.warning(
            "the route table keeps %s as stored before a newer rule; an edit of it must fix "
            "it (%s)",
            kept.field,
            kept.hint,
        )


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.CONTROL.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc, proc: Control(nc, settings, proc),
    )
