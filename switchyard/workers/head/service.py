"""The head: a queue-group service on ``llm.v1.*`` that authorises, routes and enqueues.

It never relays replies: it stamps the envelope (headers), stores the request in the chosen
deployment's JetStream queue with the caller's reply subject in ``Sy-Reply``, tells the caller
``accepted``, and moves on. Errors it can decide (bad body, unknown model, deadline passed, queue
full) are answered at once. Retryable provider failures come back on ``llm.v1.reroute`` from
model-proxies; the head then tries the next deployment or fallback. So do requests bounced
because their deployment left every route while they were queued: no attempt, routed again by
the table as it is now (see ``decide.after_removal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind

from switchyard.bus import headers as h
from switchyard.bus import identities, replies, subjects
from switchyard.bus.connect import subscribed
from switchyard.bus.envelope import (
    CLOCK_SKEW_S,
    Deadline,
    Envelope,
    MalformedHeader,
    given_up_for,
)
from switchyard.bus.request_info import caller_identity
from switchyard.config import Settings
from switchyard.dialects.probes import COUNTS
from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailable,
)
from switchyard.runtime import deadlines
from switchyard.runtime.cooldowns import CooldownBook
from switchyard.runtime.definitions import ROUTE_TABLE_KEY
from switchyard.runtime.jetstream import AckPublisher
from switchyard.runtime.kvwatch import KvFollower
from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.runtime.tracing import NO_HOP, Hop
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas.openai import PROBES, Model, ModelList, encode, model_of, probe
from switchyard.schemas.routing import Deployment, InvalidRouteTable, decode_route_table
from switchyard.schemas.scheduling import (
    INTERACTIVE,
    PREMIUM_TIER,
    capped,
    fair_tenant,
    lowered_tier,
    of_service_tier,
)
from switchyard.telemetry import request_id_var
from switchyard.workers.head import decide, queue_room
from switchyard.workers.head.admission import Admission
from switchyard.workers.head.callers import authorize, stamp, visible_aliases
from switchyard.workers.head.dispatch import msg_id, publish_dispatch
from switchyard.workers.head.keys import KeyPolicies
from switchyard.workers.head.metrics import (
    DISPATCHED,
    EXHAUSTED,
    REFUSED,
    REROUTED,
    STALE,
    HeadMetrics,
)
from switchyard.workers.head.odd_messages import kind_said, reply_target
from switchyard.workers.head.router import Router
from switchyard.workers.head.spent_keys import SpentKeys

log = logging.getLogger("switchyard.head")
# The errors header a full queue adds to (as the model-proxy does on a reroute): its tail.
_MAX_ERRORS = 900

_OPS = {
    subjects.CHAT: "chat",
    subjects.COMPLETE: "complete",
    subjects.EMBED: "embed",
    subjects.RESPONSES: "responses",
    subjects.MESSAGES: "messages",
    subjects.COUNT_TOKENS: "count_tokens",
    subjects.INPUT_TOKENS: "input_tokens",
}


class Head:
    def __init__(self, nc: NATS, settings: Settings, proc: Process) -> None:
        metrics = proc.metrics
        self.tracing = proc.tracing
        self.nc = nc
        self.js = nc.jetstream(timeout=settings.head.publish_timeout_s)
        self.publisher = AckPublisher(nc)
        self.settings = settings
        self.router = Router(settings.route_table)
        self.cooldowns = CooldownBook(self.js)
        self.keys = KeyPolicies(nc, spent=SpentKeys(self.js, metrics))  # + spent budgets
        self.admission = Admission(self.js, enabled=settings.routing.fair_queueing)
        self.stats = HeadMetrics(metrics, lambda: self.router, self.cooldowns)
        self.stats.routed(settings.route_table)
        self._routes = KvFollower(
            self.js, subjects.ROUTES_BUCKET, self._on_routes, keys=ROUTE_TABLE_KEY
        )
        # Set (and replaced) at each new route table: what a removal bounce waits for.
        self._new_routes = asyncio.Event()
        self._subs: list[Subscription] = []
        self._tasks = TaskSupervisor("head", limit=settings.head.max_in_flight)
        self._stale_log = Throttle(10.0)
        self._stale_count = 0  # attempts dropped since the last line about them
        self._unanswerable_log = Throttle(10.0)
        self._unanswerable = 0  # messages without a reply subject since the last line
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
        self.stats.routed(table)
        self._new_routes.set()
        self._new_routes = asyncio.Event()
        log.info("route table revision %d: %d aliases", revision, len(table.routes))

    async def start(self) -> None:
        await self.publisher.start()
        await self.cooldowns.start()
        await self.keys.start()
        await self.admission.start()
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
        await subscribed(self.nc)
        self.ready = True

    async def stop(self, grace: float) -> None:
        """Stop taking requests, finish those in flight (up to ``grace``), then drain."""
        self.ready = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self._tasks.drain(grace)
        await self._routes.stop()
        await self.cooldowns.stop()
        await self.keys.stop()
        await self.admission.stop()
        await self.publisher.stop()

    async def _on_message(self, msg: Msg) -> None:
        if msg.subject == subjects.REROUTE and msg.reply and not self._tasks.closed:
            # Confirms receipt before any wait: the model-proxy answers the caller itself
            # when no head confirms (see modelproxy.handler), as it does for a stopping head.
            await msg.respond(b"")
        try:
            # Waits for a free slot: past max_in_flight, NATS buffers (and callers' accept
            # timeouts re-send elsewhere) instead of this process growing without bound.
            await self._tasks.spawn_bounded(self._handle(msg))
        except SupervisorClosed:
            if msg.reply and msg.subject != subjects.REROUTE:
                busy = ServiceUnavailable("this head is shutting down; retry", code="head_stopping")
                await replies.send_error(self.nc, msg.reply, busy)

    async def _handle(self, msg: Msg) -> None:
        rerouted = msg.subject == subjects.REROUTE
        if not (msg.reply or rerouted):  # before decoding: a looped-back chunk's headers
            self._unanswerable_dropped(msg)  # are a reply's, not a request's
            return
        try:
            env = Envelope.decode(msg.headers)
        except MalformedHeader as exc:
            if msg.reply and not rerouted:
                await replies.send_error(self.nc, msg.reply, exc)
            elif not (rerouted and await self._unreadable_reroute(msg, exc)):
                log.warning("dropped a message on %s: %s", msg.subject, exc.message)
            return
        reply = env.reply if rerouted else msg.reply
        if not reply:
            self._unanswerable_dropped(msg)
            return
        token = request_id_var.set(env.request_id)
        hop = NO_HOP
        if msg.subject != subjects.MODELS:
            hop = self.tracing.start(
                "route",
                traceparent=env.traceparent,
                tracestate=env.tracestate,
                kind=SpanKind.SERVER,
                attributes={"switchyard.attempt": env.attempt, "switchyard.hop": env.hop},
            )
        failure: BaseException | None = None
        named = decide.Named()  # filled where routing gives up (decide.Named)
        try:
            if msg.subject == subjects.MODELS:
                await self._models(env, msg.headers, reply)
            elif rerouted:
                await self._reroute(msg.data, env, hop, named)
            else:
                await self._route(msg, env, reply, hop, named)
        except ApiError as exc:
            deadlines.name_limit(exc, env, msg.headers, rerouted, self.settings.ingress)
            failure = exc
            if msg.subject != subjects.MODELS:
                self.stats.outcome(EXHAUSTED if rerouted else REFUSED)
            await replies.send_error(
                self.nc,
                reply,
                exc,
                deployment=named.deployment,
                attempts=named.attempts,
                request_id=env.request_id,
            )
        except Exception as exc:  # the endpoint's error boundary: answer, log, keep serving
            failure = exc
            log.exception("internal error handling %s", msg.subject)
            internal = ApiError("internal error in the router")
            await replies.send_error(self.nc, reply, internal, request_id=env.request_id)
        finally:
            hop.end(failure)
            request_id_var.reset(token)

    async def _unreadable_reroute(self, msg: Msg, exc: MalformedHeader) -> bool:
        """Answer the caller of a reroute whose headers break the contract (a model-proxy of
        another version, or one past a limit such as ``Sy-Tried``'s), when its reply target
        (``Sy-Reply``) can be read: its receipt was confirmed, so nobody else will, and its
        caller would wait for its deadline. False when there is nobody to answer."""
        raw = msg.headers or {}
        reply = reply_target(raw)
        if reply is None:
            return False
        log.error("could not route a rerouted request again, answering its caller: %s", exc.message)
        self.stats.outcome(EXHAUSTED)
        failure = ApiError(
            f"internal error in the router: a retry could not be read ({exc.message})"
        )
        request_id = raw.get(h.REQUEST_ID, "") if exc.header != h.REQUEST_ID else ""
        await replies.send_error(self.nc, reply, failure, request_id=request_id[:128])
        return True

    def _unanswerable_dropped(self, msg: Msg) -> None:
        """A message without a reply subject: nobody to answer. Most are Switchyard's own
        answers coming back. A caller that names an LLM API subject as its reply subject gets
        its answers published there, in its own account, whose import of that subject brings
        them here (twice or more per request). The head cannot refuse such a request before
        serving it: it sees only the server's mapping of the reply subject (``_R_...``), never
        the caller's. Said at most every 10 s, with the latest one's kind and request id."""
        self._unanswerable += 1
        if not self._unanswerable_log.ready():
            return
        headers = msg.headers or {}
        log.warning(
            "dropped %d messages without a reply subject on the LLM API since the last such "
            "line (the latest: %s on %s, request %s). A caller that names an LLM API subject "
            "as its reply subject gets its answers back here, through its account's import, "
            "and never reads them (its request is served all the same); one that names no "
            "reply subject gets no answer",
            self._unanswerable,
            kind_said(headers),
            msg.subject,
            headers.get(h.REQUEST_ID, "unnamed")[:128],
        )
        self._unanswerable = 0

    async def _models(self, env: Envelope, raw: dict[str, str] | None, reply: str) -> None:
        visible = await visible_aliases(self.keys, self.router.aliases(), env, raw)
        listing = ModelList(data=[Model(id=a) for a in visible])
        await replies.send_final(self.nc, reply, encode(listing), request_id=env.request_id)

    def _deadline(self, env: Envelope) -> Envelope:
        """The envelope with a deadline (the default when the caller sent none).

        Raises:
            DeadlineExceeded: it already passed.
        """
        if env.deadline is None:
            env = env.with_(deadline=Deadline.after(self.settings.ingress.default_deadline_s))
        elif env.deadline.passed():
            raise DeadlineExceeded("the request deadline passed before it was routed")
        return env

    async def _route(
        self, msg: Msg, env: Envelope, reply: str, hop: Hop, named: decide.Named
    ) -> None:
        caller = caller_identity(msg.headers)
        by = deadlines.set_by(env, caller, self.settings.ingress)
        env = self._deadline(env)
        if await self._stale(env, msg, reply):
            return
        limit = self.settings.ingress.max_body_bytes
        if len(msg.data) > limit:
            # The HTTP edges refuse these before publishing; internal callers reach us.
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        op = _OPS[msg.subject]
        # The whole request shape where the edges check one (param names the field); the
        # Responses and Messages dialects are checked by their translators.
        body = probe(op, msg.data) if op in PROBES else model_of(msg.data)
        alias = body.model
        if caller not in identities.KEY_HASH_CALLERS:  # capped as the HTTP edges cap theirs
            assert env.deadline is not None  # noqa: S101  (set by _deadline)
            env = env.with_(deadline=env.deadline.capped(self.settings.ingress.max_deadline_s))
        key, pinned, presented = await authorize(self.keys, env, caller, msg.headers)
        if not key.allows(alias):  # before the budget: the edges' order (403, then 429)
            raise PermissionDenied(f"this API key may not use the model `{alias}`", param="model")
        self.keys.check_budget(key)  # the edges' 429 budget_exceeded, for every caller
        wish = env.priority or of_service_tier(getattr(body, "service_tier", None)) or key.priority
        if op in COUNTS:  # a quick question agents ask before a request: never behind bulk work
            wish = "interactive"
        if env.bounces:  # only a model-proxy counts bounces (a caller's claim is dropped)
            env = env.with_(bounces=0, removed="")
        env = stamp(env, key, caller, presented).with_(
            priority=capped(wish, key.max_priority),
            weight=key.weight,
            # A pin travels with the request, so a failed attempt comes back pinned and ends
            # (_after_failure) instead of being rerouted to another deployment.
            pin=pinned or "",
            authorization="",  # never stored in a queue
            op=op,
            alias=alias,
            reply=reply,
            deadline_by=by,  # a reroute's 504 names it too (deadlines)
            # A count is one answer, even of a body that asks for a stream (agents count the
            # very body they are about to send).
            stream=op not in COUNTS and bool(getattr(body, "stream", False)),
            tried=(),
            unfit=(),
            unfit_code="",
            unfit_param="",
            errors="",
            last_status=0,
            retry_after=None,
        )
        if await self._stale(env, msg, reply):  # the key lookup can take seconds in an outage
            return
        data = msg.data
        if env.priority != INTERACTIVE and getattr(body, "service_tier", None) == PREMIUM_TIER:
            # Run below interactive (the key's cap, a batch line, a header asking for less):
            # nor may its provider call ask for the processing OpenAI charges more for.
            data = lowered_tier(data)
        placed = await self._place(data, env, hop, named, pinned=pinned or None)
        self.stats.outcome(DISPATCHED)
        await replies.send_accepted(self.nc, reply, env.request_id, *placed)

    async def _stale(self, env: Envelope, msg: Msg, reply: str) -> bool:
        """True (logged, counted, answered) when the caller stopped waiting for this attempt
        before this head got to it: it was sent again or its caller was told it failed, so
        serving it would call the provider for an answer nobody reads (a head paused for
        28 s ran 229 requests twice). The 504 it gets is read only by a caller that still
        listens: one whose clock runs ahead of this head's, which then learns why.

        Raises:
            MalformedHeader: ``Sy-Accept-By`` is not unix time in milliseconds.
        """
        late = given_up_for(msg.headers)
        if not late:
            return False
        self.stats.outcome(STALE)
        self._stale_count += 1
        if self._stale_log.ready():  # an overloaded head drops many: one line per period
            log.warning(
                "dropped %d request attempts unserved since the last such line (the latest, "
                "attempt %d of request %s, %.1f s late): their callers had stopped waiting "
                "for them (%s plus %.0f s for clocks) and sent them again or gave up. This "
                "head was paused or busy past its max_in_flight; if it was neither, its "
                "clock is behind its callers'",
                self._stale_count,
                env.attempt,
                env.request_id,
                late,
                h.ACCEPT_BY,
                CLOCK_SKEW_S,
            )
            self._stale_count = 0
        late_error = DeadlineExceeded(
            f"this attempt reached a head {late:.1f} s after its {h.ACCEPT_BY} (plus "
            f"{CLOCK_SKEW_S:.0f} s for clocks), when its caller would have sent it again: it "
            "was dropped unserved (if you are still waiting, your clock runs ahead of the "
            "platform's)"
        )
        await replies.send_error(self.nc, reply, late_error, request_id=env.request_id)
        return True

    async def _reroute(self, body: bytes, env: Envelope, hop: Hop, named: decide.Named) -> None:
        """A model-proxy handed a retryable failure back: try the next deployment. Or it
        bounced the request (its deployment left every route): route it again, no attempt."""
        env = self._deadline(env)
        avoid = ""
        if env.removed:
            avoid, env = await self._after_removal(env, named)
        else:
            await self._after_failure(env, named, body)
        placed = await self._place(body, env, hop, named, pinned=None, avoid=avoid)
        self.stats.outcome(REROUTED)
        # The caller learns where it went now (its 504, should its deadline pass, names it).
        await replies.send_accepted(self.nc, env.reply, env.request_id, *placed)

    async def _after_removal(self, env: Envelope, named: decide.Named) -> tuple[str, Envelope]:
        """A removal bounce: the deployment to avoid next, and the envelope to queue (the
        bounce's own mark cleared). Waits a little first while this head still routes the
        bounced deployment and has nowhere else to send the request (``decide``).

        Raises:
            ApiError: bounced too often, pinned, or the alias is no longer routed.
        """
        log.info(
            "a request came back unserved: %s had left the routes when it was pulled (bounce %d)",
            env.removed,
            env.bounces,
        )
        try:
            avoid, pause = decide.after_removal(self.router, self.cooldowns, env)
        except ApiError:
            named.bounced(env)
            raise
        pause = min(pause, env.remaining(0.0))
        if pause > 0:  # ends early at this head's next route table
            changed = self._new_routes
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await changed.wait()
        return avoid, env.with_(removed="")

    async def _place(
        self,
        body: bytes,
        env: Envelope,
        hop: Hop,
        named: decide.Named,
        *,
        pinned: str | None,
        avoid: str = "",
    ) -> tuple[str, int]:
        """Queue the request for the deployment the route picks; returns its id and placement
        (as its keep-alives name it). A full queue counts as a tried deployment (no cooldown:
        it drains by itself; the next placement is one more) and the next candidate, another
        deployment or a fallback, takes the request; with none left, the attempts spent or
        ``Sy-Tried`` full, the caller gets ``queue_full``.
        ``avoid``: a deployment that just bounced the request, not chosen while the route has
        another."""
        full: ServiceUnavailable | None = None
        failed_before = bool(env.provider_attempts)  # earlier attempts failed at a provider
        while True:
            try:
                chosen = decide.choose(
                    self.router, self.cooldowns, env, pinned=pinned, avoid=avoid, body=body
                )
            except ApiError:
                named.tried(env)  # none after no attempt (every candidate cooling down)
                if full is not None and not failed_before:  # the full queue is the answer
                    raise full from None
                raise  # (after real failures: the one error naming every attempt)
            deployment = self._spare(env, chosen, body, avoid)
            try:
                await self._dispatch(body, env, deployment, hop)
                return deployment.id, env.placement
            except ApiError as exc:  # a full HOLD queue, no queue at all, the deadline...
                if not isinstance(exc, ServiceUnavailable) or exc.code != "queue_full" or env.pin:
                    named.refused_by(deployment.id, env)
                    raise
                full = exc
            summary = f"{deployment.id}: 503 {full.message}".replace(";", ",")
            errors = f"{env.errors}; {summary}" if env.errors else summary
            limited = env.last_status == 429  # an earlier rate limit stays the answer's kind
            env = env.with_(
                tried=(*env.tried, deployment.id),
                errors=errors[-_MAX_ERRORS:],
                last_status=429 if limited else 503,
                retry_after=env.retry_after if limited else 0.0,
            )
            spent = env.provider_attempts >= self.settings.routing.max_attempts
            if spent or decide.tried_full(env):  # attempts spent, or Sy-Tried full
                named.tried(env)
                raise decide.queues_spent(
                    self.router, self.cooldowns, env, full, failed_before=failed_before, body=body
                )

    def _spare(self, env: Envelope, chosen: Deployment, body: bytes, avoid: str = "") -> Deployment:
        """Batch work goes to a deployment of the model with spare capacity, if one has (not
        ``avoid``, the deployment that just bounced it, nor one that would translate what
        only ``chosen`` serves natively)."""
        if env.priority != "batch" or env.pin or not self.admission.held(chosen.id):
            return chosen
        other = self.router.sibling(
            chosen,
            tried=(*env.tried, avoid) if avoid else env.tried,
            skip=lambda d: self.admission.held(d) or self.cooldowns.cooling(d),
        )
        if other is None or decide.keeps_native(self.router, env, body, chosen, other):
            return chosen
        return other

    async def _dispatch(self, body: bytes, env: Envelope, chosen: Deployment, hop: Hop) -> None:
        deadline = env.deadline
        assert deadline is not None  # noqa: S101  (set by _deadline)
        deployment = chosen.id
        serving = self.router.alias_of(deployment)
        if serving is not None and serving != env.alias:
            self.stats.fallback(env.alias, serving)
        hop.set({"switchyard.alias": env.alias, "switchyard.deployment": deployment})
        if hop.span is not None:  # the model-proxy's spans are children of this one
            env = env.with_(traceparent=hop.traceparent)
        out = env.with_(deployment=deployment).encode()
        # A bounce queues the request again with the same tries, so the dedup key must tell
        # it from the publish that was bounced (else JetStream drops it as a duplicate).
        out[h.NATS_MSG_ID] = f"{msg_id(env)}:{env.bounces}" if env.bounces else msg_id(env)
        subject = ""  # straight to dispatch, unless the deployment is saturated:
        if not env.pin and not self.admission.direct(
            deployment, self.router.concurrency(deployment)
        ):
            priority = env.priority or "default"
            if self.admission.full(deployment, priority):  # holds all it may: as a full queue
                limit = self.settings.streams.hold_total_limit  # (Retry-After: to serve them)
                raise queue_room.full(deployment, self._drain_retry_after(deployment, limit))
            subject = subjects.hold(deployment, priority, fair_tenant(env.tenant, env.key_id))
        await publish_dispatch(
            self.publisher,
            deployment,
            body,
            out,
            timeout=self.settings.head.publish_timeout_s,
            retries=self.settings.head.publish_retries,
            deadline=deadline,
            room_in=self._room_in,
            subject=subject,
        )

    def _room_in(self, deployment: str, held: bool) -> float:
        """``Retry-After`` of ``deployment``'s full queue, the tenant's HOLD queue if ``held``:
        the time to serve its limit's worth of requests (:mod:`queue_room`)."""
        streams = self.settings.streams
        depth = streams.hold_tenant_limit if held else streams.dispatch_queue_limit
        return self._drain_retry_after(deployment, depth)

    def _drain_retry_after(self, deployment: str, depth: int) -> float:
        """``Retry-After`` for a caller ``deployment``'s queue of ``depth`` refused, at the
        feeder's measured pace (:mod:`queue_room`)."""
        pace = self.admission.per_request_s(deployment) or queue_room.DEFAULT_PER_REQUEST_S
        return queue_room.retry_after(depth, self.router.concurrency(deployment), pace)

    async def _after_failure(self, env: Envelope, named: decide.Named, body: bytes) -> None:
        """Cool the deployment that failed, pause, or give up.

        Raises:
            ApiError: the attempt budget is spent, or the request was pinned to one deployment.
        """
        failed = env.tried[-1] if env.tried else ""
        seconds, pause = decide.after_attempt(env, self.settings.routing)
        if seconds > 0:  # none after a refusal, or with nothing to wait for (no key stored)
            reason = env.errors.rsplit("; ", 1)[-1]
            # The provider's own status when the model-proxy sent it (a 500, not the bus's 502).
            status = env.upstream_status or env.last_status or 502
            asked = env.retry_after is not None
            await self.cooldowns.cool(failed, seconds, status=status, reason=reason, asked=asked)
            self.stats.cooled(failed)
        # A deployment that had no place for a field of the request made no attempt.
        if env.provider_attempts >= self.settings.routing.max_attempts or env.pin:
            named.tried(env)
            raise decide.attempts_spent(self.router, self.cooldowns, env, body)
        if 0 < pause < env.remaining(0.0):  # none after a refusal or an uncalled provider
            await asyncio.sleep(pause)


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.HEAD.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc, proc: Head(nc, settings, proc),
    )
