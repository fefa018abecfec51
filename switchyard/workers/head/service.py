"""The head: a queue-group service on ``llm.v1.*`` that authorises, routes and enqueues.

It never relays replies: it stamps the envelope (headers), stores the request in the chosen
deployment's JetStream queue with the caller's reply subject in ``Sy-Reply``, tells the caller
``accepted``, and moves on. Errors it can decide (bad body, unknown model, deadline passed, queue
full) are answered at once. Retryable provider failures come back on ``llm.v1.reroute`` from
model-proxies; the head then tries the next deployment or fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchyard.bus import headers as h
from switchyard.bus import identities, replies, subjects
from switchyard.bus.jetstream import AckPublisher
from switchyard.bus.request_info import caller_identity
from switchyard.config import Settings
from switchyard.errors import (
    ApiError,
    AuthenticationFailed,
    DeadlineExceeded,
    PermissionDenied,
)
from switchyard.schemas.keys import ClientKey, hash_key
from switchyard.schemas.openai import Model, ModelList, encode, model_of
from switchyard.schemas.routing import InvalidRouteTable, decode_route_table
from switchyard.stack.provision import ROUTE_TABLE_KEY
from switchyard.telemetry import request_id_var
from switchyard.workers.head import decide
from switchyard.workers.head.cooldowns import CooldownBook
from switchyard.workers.head.dispatch import msg_id, publish_dispatch
from switchyard.workers.head.keys import KeyPolicies
from switchyard.workers.head.router import Router
from switchyard.workers.kvwatch import KvFollower
from switchyard.workers.modelproxy.providers.upstream_errors import parse_retry_after
from switchyard.workers.runtime import serve_worker

log = logging.getLogger("switchyard.head")

_OPS = {subjects.CHAT: "chat", subjects.COMPLETE: "complete", subjects.EMBED: "embed"}


# Requests the admin API pins to one deployment are attributed to this key.
DEPLOYMENT_TEST_KEY = ClientKey(
    id="admin-deployment-test", hash="", name="deployment test", team="admin"
)


class Head:
    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=settings.head.publish_timeout_s)
        self.publisher = AckPublisher(nc)
        self.settings = settings
        self.router = Router(settings.route_table)
        self.cooldowns = CooldownBook(self.js)
        self.keys = KeyPolicies(nc)
        self._routes = KvFollower(
            self.js, subjects.ROUTES_BUCKET, self._on_routes, keys=ROUTE_TABLE_KEY
        )
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.head.max_in_flight)
        self.ready = False

    async def _on_routes(self, key: str, value: bytes | None, revision: int) -> None:
        if value is None:
            log.warning("route table deleted from KV; keeping revision %d", self.router.revision)
            return
        try:
            table = decode_route_table(value)
        except InvalidRouteTable as exc:
            log.error("ignored route table revision %d: %s", revision, exc)
            return
        self.router = Router(table, revision)
        log.info("route table revision %d: %d aliases", revision, len(table.routes))

    async def start(self) -> None:
        await self.publisher.start()
        await self.cooldowns.start()
        await self.keys.start()
        await self._routes.start()
        for subject in (*_OPS, subjects.MODELS):
            self._subs.append(
                await self.nc.subscribe(subject, queue=subjects.HEAD_QUEUE, cb=self._on_message)
            )
        self._subs.append(
            await self.nc.subscribe(
                subjects.REROUTE, queue=subjects.HEAD_QUEUE, cb=self._on_message
            )
        )
        await self.nc.flush()
        self.ready = True

    async def stop(self, grace: float) -> None:
        """Stop taking requests, finish those in flight (up to ``grace``), then drain."""
        self.ready = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        await self._routes.stop()
        await self.cooldowns.stop()
        await self.keys.stop()
        await self.publisher.stop()

    async def _on_message(self, msg: Msg) -> None:
        if msg.subject == subjects.REROUTE and msg.reply:
            # Confirms receipt before any wait: the model-proxy answers the caller itself
            # when no head confirms (see modelproxy.handler).
            await msg.respond(b"")
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, msg: Msg) -> None:
        headers: dict[str, str] = dict(msg.headers or {})
        rerouted = msg.subject == subjects.REROUTE
        reply = headers.get(h.REPLY, "") if rerouted else msg.reply
        if not reply:
            log.warning("dropped a message on %s without a reply subject", msg.subject)
            return
        token = request_id_var.set(headers.get(h.REQUEST_ID))
        try:
            if msg.subject == subjects.MODELS:
                await self._models(headers, reply)
            else:
                await self._route(msg, headers, reply, rerouted)
        except ApiError as exc:
            await replies.send_error(self.nc, reply, exc)
        except Exception:  # the endpoint's error boundary: answer, log, keep serving
            log.exception("internal error handling %s", msg.subject)
            await replies.send_error(self.nc, reply, ApiError("internal error in the router"))
        finally:
            request_id_var.reset(token)

    async def _models(self, headers: dict[str, str], reply: str) -> None:
        key, _ = await self._authorize(headers)
        visible = [a for a in self.router.aliases() if key.allows(a)]
        listing = ModelList(data=[Model(id=a) for a in visible])
        await replies.send_final(self.nc, reply, encode(listing), {})

    async def _route(self, msg: Msg, headers: dict[str, str], reply: str, rerouted: bool) -> None:
        now_ms = int(time.time() * 1000)
        deadline_ms = h.int_header(headers, h.DEADLINE, 0)
        if deadline_ms <= 0:
            deadline_ms = now_ms + int(self.settings.ingress.default_deadline_s * 1000)
            headers[h.DEADLINE] = str(deadline_ms)
        if deadline_ms <= now_ms:
            raise DeadlineExceeded("the request deadline passed before it was routed")
        pinned: str | None = None
        if rerouted:
            alias = headers.get(h.ALIAS, "")
            await self._after_failure(alias, headers, deadline_ms)
        else:
            probe = model_of(msg.data)
            alias = probe.model
            key, pinned = await self._authorize(headers)
            if pinned:
                # Travels with the request, so a failed attempt comes back pinned and ends
                # (_after_failure) instead of being rerouted to another deployment.
                headers[h.PIN] = pinned
            if not key.allows(alias):
                raise PermissionDenied(
                    f"this API key may not use the model `{alias}`", param="model"
                )
            headers[h.OP] = _OPS[msg.subject]
            headers[h.ALIAS] = alias
            headers[h.REPLY] = reply
            if probe.stream:
                headers[h.STREAM] = "1"
        deployment = decide.choose(self.router, self.cooldowns, alias, headers, pinned=pinned)
        hop = len(decide.tried_of(headers))
        out = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
        out[h.NATS_MSG_ID] = msg_id(headers, hop)
        out[h.DEPLOYMENT] = deployment.id
        await publish_dispatch(
            self.publisher,
            deployment.id,
            msg.data,
            out,
            timeout=self.settings.head.publish_timeout_s,
            retries=self.settings.head.publish_retries,
            deadline_ms=deadline_ms,
        )
        if not rerouted:
            await replies.send_accepted(self.nc, reply)

    async def _after_failure(self, alias: str, headers: dict[str, str], deadline_ms: int) -> None:
        """A model-proxy handed a failure back: cool the deployment, pause, or give up.

        Raises:
            ApiError: the attempt budget is spent, or the request was pinned to one deployment.
        """
        tried = decide.tried_of(headers)
        failed = tried[-1] if tried else ""
        status = h.int_header(headers, h.LAST_STATUS, 502)
        seconds = parse_retry_after(headers.get(h.RETRY_AFTER))
        if seconds is None:
            seconds = self.settings.routing.cooldown_s
        if failed:
            reason = headers.get(h.ERRORS, "").rsplit("; ", 1)[-1]
            await self.cooldowns.cool(failed, seconds, status=status, reason=reason)
        if len(tried) >= self.settings.routing.max_attempts or headers.get(h.PIN):
            raise decide.exhausted(alias, tried, headers)
        pause = decide.backoff(len(tried), self.settings.routing)
        if time.time() + pause < deadline_ms / 1000:
            await asyncio.sleep(pause)

    async def _authorize(self, headers: dict[str, str]) -> tuple[ClientKey, str | None]:
        """Establish the request's client key from what the client zone cannot forge.

        An edge (tail, gateway) authenticated the key and passes its hash; any other caller
        must present the key itself in ``Authorization`` (removed here, so it is never stored
        in a queue). Either way the head looks the key up itself and overwrites the identity
        headers. Returns the key and, for the gateway only, a pinned deployment.

        Raises:
            AuthenticationFailed: no key, unknown, revoked or expired.
        """
        caller = caller_identity(headers)
        presented = headers.pop(h.AUTHORIZATION, "")
        pinned = headers.pop(h.PIN, None)
        if pinned and caller == identities.GATEWAY.name:
            # The management API's "test this deployment" (admin-authenticated at the edge).
            headers[h.KEY_ID] = DEPLOYMENT_TEST_KEY.id
            headers[h.TENANT] = DEPLOYMENT_TEST_KEY.team
            return DEPLOYMENT_TEST_KEY, pinned
        if caller in identities.INGRESS_NAMES:
            digest = headers.get(h.KEY_HASH, "")
        else:
            scheme, _, value = presented.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else presented.strip()
            if not token:
                raise AuthenticationFailed(
                    "present a client key in the Authorization header of the request",
                    code="missing_api_key",
                )
            digest = hash_key(token)
        key = await self.keys.get(digest) if digest else None
        if key is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        refused = key.refusal()
        if refused is not None:
            raise refused
        headers[h.KEY_HASH] = digest
        headers[h.KEY_ID] = key.id
        headers[h.TENANT] = key.team
        headers[h.BUDGET_PERIOD] = key.budget_period
        return key, None

    def metrics(self) -> str:
        """Prometheus text: cooldowns and the route table revision."""
        lines = [
            "# HELP switchyard_route_table_revision KV revision of the route table in use.",
            "# TYPE switchyard_route_table_revision gauge",
            f"switchyard_route_table_revision {self.router.revision}",
            "# HELP switchyard_deployment_cooldown_seconds Seconds left in a cooldown.",
            "# TYPE switchyard_deployment_cooldown_seconds gauge",
        ]
        now = time.time()
        for entry in self.cooldowns.active(now):
            left = max(0.0, entry.until - now)
            name = entry.deployment
            lines.append(
                f'switchyard_deployment_cooldown_seconds{{deployment="{name}"}} {left:.3f}'
            )
        return "\n".join(lines) + "\n"


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.HEAD.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc: Head(nc, settings),
        metrics=lambda head: head.metrics(),
    )
