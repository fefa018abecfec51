"""``switchyard serve control``: route table changes and deployment status, for admins only.

Endpoints (NATS micro, queue group ``control``, exported to the CLIENT admin identity):

* ``control.v1.admin.routes.get``: the table and its KV revision;
* ``control.v1.admin.routes.put``: replace the table, all or nothing: validated, consumers for
  new deployments provisioned first, then written with compare-and-set so two admins cannot
  overwrite each other (409 on a lost race). Heads and model-proxies apply it from their watch;
* ``control.v1.admin.deployments``: every deployment with its aliases, cooldown and queue depth;
* ``control.v1.admin.cooldowns.clear``: end a deployment's cooldown now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from switchyard.bus import identities, subjects
from switchyard.config import Settings
from switchyard.errors import Conflict, InvalidRequest
from switchyard.runtime.audit import request_actor
from switchyard.runtime.cooldowns import CooldownBook
from switchyard.runtime.definitions import ROUTE_TABLE_KEY, sync_dispatch_consumers
from switchyard.runtime.endpoints import Endpoints, reply_ok
from switchyard.runtime.worker import serve_worker
from switchyard.schemas import control as wire
from switchyard.schemas.health import PREFIX as COOLDOWN_PREFIX
from switchyard.schemas.routing import (
    InvalidRouteTable,
    RouteTable,
    decode_route_table,
    route_table_problems,
)

log = logging.getLogger("switchyard.control")
audit = logging.getLogger("switchyard.control.audit")

Handler = Callable[[Request], Awaitable[None]]


class Control:
    _routes: KeyValue  # the buckets, opened by start() before any request can come
    _health: KeyValue

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.settings = settings
        self.js = nc.jetstream(timeout=10)
        self.cooldowns = CooldownBook(self.js)
        self._service: Service | None = None
        self._endpoints = Endpoints("control")
        self._write_lock = asyncio.Lock()
        self.ready = False

    async def start(self) -> None:
        self._routes = await self.js.key_value(subjects.ROUTES_BUCKET)
        self._health = await self.js.key_value(subjects.HEALTH_BUCKET)
        await self.cooldowns.start()
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
            "cooldowns.clear": self._clear,
        }
        for name, handler in endpoints.items():
            await svc.add_endpoint(
                name=name.replace(".", "-"),
                subject=subjects.control_admin(name),
                handler=self._endpoints.wrap(handler),
            )
        self._service = svc
        self.ready = True

    async def stop(self, grace: float) -> None:
        self.ready = False
        if self._service is not None:
            await self._service.stop()
            self._service = None
        await self._endpoints.drain(grace)
        await self.cooldowns.stop()

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
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidRequest(f"invalid route table: {exc}") from None
        table = put.table
        problems = route_table_problems(table)  # the same checks every head applies
        if problems:
            raise InvalidRequest(
                f"invalid route table: {InvalidRouteTable(problems)}", param=problems[0].field
            )
        data = msgspec.json.encode(table)
        async with self._write_lock:
            current = await self._state()
            if put.expected_revision is not None and put.expected_revision != current.revision:
                raise Conflict(
                    f"the route table changed since revision {put.expected_revision} "
                    f"(now {current.revision}); read it again and retry"
                )
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
        who = request_actor(req)
        audit.info(
            "route table revision %d by %s: %d providers, %d routes",
            revision,
            who,
            len(table.providers),
            len(table.routes),
        )
        await reply_ok(req, wire.ENCODER.encode(wire.TableState(revision=revision, table=table)))

    async def _deployments(self, req: Request) -> None:
        state = await self._state()
        aliases: dict[str, list[str]] = {}
        for alias, route in state.table.routes.items():
            for dep in route.deployments:
                aliases.setdefault(dep.id, []).append(alias)
        now = time.time()
        active = {c.deployment: c for c in self.cooldowns.active(now)}
        out = []
        for dep_id, (provider, dep) in state.table.deployments().items():
            queued, in_flight = await self._depth(dep_id)
            cooling = active.get(dep_id)
            out.append(
                wire.DeploymentInfo(
                    id=dep_id,
                    provider=dep.provider,
                    kind=provider.kind,
                    model=dep.model,
                    aliases=sorted(aliases.get(dep_id, [])),
                    weight=dep.weight,
                    concurrency=dep.concurrency or provider.concurrency,
                    queued=queued,
                    in_flight=in_flight,
                    cooldown=wire.CooldownInfo(
                        until=cooling.until,
                        seconds_left=round(cooling.until - now, 3),
                        status=cooling.status,
                        reason=cooling.reason,
                    )
                    if cooling
                    else None,
                )
            )
        await reply_ok(
            req, wire.ENCODER.encode(wire.DeploymentList(sorted(out, key=lambda d: d.id)))
        )

    async def _depth(self, dep_id: str) -> tuple[int, int]:
        try:
            info = await self.js.consumer_info(
                subjects.DISPATCH_STREAM, subjects.dispatch_consumer(dep_id)
            )
        except NotFoundError:
            return -1, -1
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    async def _clear(self, req: Request) -> None:
        try:
            ref = wire.DEPLOYMENT_REF.decode(req.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidRequest(f"invalid request: {exc}") from None
        with contextlib.suppress(KeyNotFoundError):
            await self._health.delete(f"{COOLDOWN_PREFIX}{ref.deployment}")
        audit.info("cooldown of %s cleared by %s", ref.deployment, request_actor(req))
        await reply_ok(req, b'{"cleared":true}')


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.CONTROL.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc: Control(nc, settings),
    )
