"""Serve one dispatched request: check it, call the provider, stream the reply, account, ack.

Order matters for "never lose a request": the reply goes out first, then the usage event is
handed to the batcher, and the JetStream message is acknowledged once the batch holding it is
stored. A worker that dies before the ack leaves the request to be redelivered to another
worker, which bills it under the same event id (accounting counts it once). A retryable
provider failure before any content reached the caller goes back to the heads
(``llm.v1.reroute``) for the next deployment; once content was sent, a failure ends the stream
with an error message instead, and cools the deployment from here (:mod:`.midstream`). A
request queued for a deployment that has since left every route goes back the same way, but as
a bounce, not a failed attempt (:func:`reroute_bounced`).
A reroute no head confirms (none running, or too slow to answer) is answered with the failure
itself, so the caller never waits for its deadline on a request nobody holds. A request whose
provider key this model-proxy cannot fetch (Vault down, and no cached copy) goes back to its
queue for another model-proxy that may hold the key (:mod:`.handback`), a bounded number of
times. A request whose caller left (``llm.v1.cancel``, :mod:`.cancels`) is stopped, answered
to nobody and retried nowhere; billed for what its provider call cost; and, when the cancel
came while it was queued, acknowledged without a provider call. One whose deadline passed
while the provider worked is answered 504 and billed the same way; one whose deadline passed
before the provider was called is answered 504 and not billed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import replies, subjects
from switchyard.bus.envelope import Envelope, MalformedHeader
from switchyard.config import Settings
from switchyard.dialects.probes import COUNTS
from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    ProviderTimeout,
    SecretMissing,
    ServiceUnavailable,
)
from switchyard.runtime import deadlines
from switchyard.runtime.cooldowns import CooldownWriter
from switchyard.runtime.jetstream import AckPublisher
from switchyard.runtime.secret_cache import SecretCache
from switchyard.runtime.throttle import Throttle
from switchyard.runtime.tracing import NO_HOP, OFF, Hop, Tracing
from switchyard.runtime.upstreams import UpstreamGuard
from switchyard.schemas.routing import RouteTable
from switchyard.telemetry import request_id_var
from switchyard.workers.modelproxy import billing, key_echo, probes, redelivery, reroutes, whole
from switchyard.workers.modelproxy.billing import CLIENT_CLOSED
from switchyard.workers.modelproxy.call_prep import decode_request_body, provider_call
from switchyard.workers.modelproxy.cancels import Cancels
from switchyard.workers.modelproxy.dialects import (
    DIALECTS,
    ended_in_dialect,
    plan,
    resolve_references,
)
from switchyard.workers.modelproxy.handback import HAND_BACK_DELAY_S, hand_back
from switchyard.workers.modelproxy.heartbeat import Heartbeats
from switchyard.workers.modelproxy.job import Job, Target
from switchyard.workers.modelproxy.metrics import CallLabels, ProxyMetrics
from switchyard.workers.modelproxy.midstream import SentFailures
from switchyard.workers.modelproxy.observe import Observer
from switchyard.workers.modelproxy.pace import CallTimes, enough_time
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import Adapter, ProviderCall
from switchyard.workers.modelproxy.providers.registry import Adapters
from switchyard.workers.modelproxy.providers.upstream_errors import retryable
from switchyard.workers.modelproxy.replay import (
    REPLAY_LOST,
    Pings,
    late_replay_needed,
    replay_needed,
    sent_on,
)
from switchyard.workers.modelproxy.response_items import ResponseItems, tenant_of
from switchyard.workers.modelproxy.response_owners import ResponseOwners
from switchyard.workers.modelproxy.serving import Serving
from switchyard.workers.modelproxy.shown_usage import send_usage_chunk, with_usage
from switchyard.workers.modelproxy.stream_watch import relay
from switchyard.workers.modelproxy.traffic import TrafficMeter
from switchyard.workers.modelproxy.usage import UsageBatcher

log = logging.getLogger("switchyard.modelproxy")

# Token counts (COUNTS) are questions about a request, not requests: nothing is generated, so
# nothing is billed (no usage event) nor reported as the deployment's traffic, and a failure is
# answered as is, not retried elsewhere: a provider's count has its own rate limits, and its
# 429 must not cool a deployment that generates fine.
_OPS = frozenset({"chat", "complete", "embed", *COUNTS, *DIALECTS})
_REROUTE_CONFIRM_S = 2.0  # a head confirms a reroute on receipt, before any backoff
_DEADLINE_SLACK_S = 0.05  # a timer cut to the deadline may fire a little before it
_COOL_WRITE_S = 2.0  # the longest a cooldown's write may hold a request's ack


class Handler:
    def __init__(
        self,
        nc: NATS,
        *,
        settings: Settings,
        adapters: Adapters,
        keys: SecretCache,
        heartbeats: Heartbeats,
        table: Callable[[], RouteTable],
        stats: ProxyMetrics | None = None,
        traffic: TrafficMeter | None = None,
        tracing: Tracing = OFF,
        handed_back: Callable[[str], None] | None = None,
    ) -> None:
        self.nc = nc
        self.stats = stats
        # Recent call times per deployment: a request too late to finish is not started.
        self.pace = CallTimes()
        self.observer = Observer(tracing, traffic, stats, self.pace)
        self.publisher = AckPublisher(nc)
        self.usage = UsageBatcher(self.publisher)
        self.settings = settings
        self.adapters = adapters
        self.keys = keys
        self.upstreams = UpstreamGuard(settings.modelproxy.allowed_upstreams)
        self.heartbeats = heartbeats
        self._table = table
        self._targets_of: RouteTable | None = None
        self._targets: dict[str, Target] = {}
        # Requests in hand and recent cancels: what a caller that left can still stop.
        self.cancels = Cancels()
        self.serving = Serving(settings.modelproxy.ack_wait_s)  # served now, acked lately
        self.owners = ResponseOwners(nc)  # who may continue which native Responses answer
        # Translated Responses answers' items, for later references (unless switched off).
        self.items = ResponseItems(nc, enabled=settings.modelproxy.keep_response_items)
        self.echoed = key_echo.EchoedKeys()  # provider keys sent back in answers, masked
        self.pings = Pings()  # an answer no stored bill confirmed is confirmed by a ping
        # How large an answer each caller takes (Sy-Parts-Max), up to this process's cap.
        self.rooms = whole.AnswerRooms(settings.modelproxy.max_answer_bytes)
        self._handing_back = Throttle(10.0)  # says so at most every 10 s
        self._keyless = Throttle(10.0)  # a provider key that cannot be fetched, as often
        # Told the deployment of each request handed back (its key could not be fetched here).
        self._handed_back = handed_back
        # A failure after part of an answer was sent reaches no head: it cools from here.
        self.sent_failures = SentFailures(
            CooldownWriter(nc.jetstream(timeout=_COOL_WRITE_S), logger=log),
            default_s=settings.routing.cooldown_s,
        )

    def target(self, deployment_id: str) -> Target | None:
        table = self._table()
        if table is not self._targets_of:  # built once per route table revision
            self._targets_of = table
            self._targets = {
                dep_id: Target(deployment.provider, provider, deployment)
                for dep_id, (provider, deployment) in table.deployments().items()
            }
        return self._targets.get(deployment_id)

    async def handle(self, msg: Msg, deployment_id: str) -> None:
        """Serve ``msg``; never raises (one error boundary per message)."""
        try:
            env = Envelope.decode(msg.headers)
        except MalformedHeader as exc:
            # Only a head writes dispatch messages; a malformed one is a bug, not a request.
            log.warning("terminated a malformed dispatch message on %s: %s", msg.subject, exc)
            await msg.term()
            return
        if not env.reply or env.op not in _OPS:
            log.warning(
                "terminated a malformed dispatch message on %s (no reply or op)", msg.subject
            )
            await msg.term()
            return
        token = request_id_var.set(env.request_id)
        if await self.serving.copy(msg):  # delivered again, served or answered here
            request_id_var.reset(token)
            return
        if self.cancels.left(env):
            await self._drop_abandoned(msg, env, deployment_id)
            request_id_var.reset(token)
            return
        job = Job(
            msg=msg,
            env=env,
            deployment_id=deployment_id,
            inflight=self.heartbeats.track(env.reply, msg, deployment_id, env.placement),
        )
        self.cancels.track(job)
        self.serving.add(job)
        try:
            if msg.metadata.num_delivered > 1:  # an earlier delivery's ack or worker was lost
                await redelivery.ask_caller(job.out(self.nc), job, self.rooms)
            await self._serve(job)
        except asyncio.CancelledError:
            await self._abandon(job)
            raise
        except Exception:  # the message's error boundary: answer, log, keep the worker alive
            log.exception("internal error serving a request")
            internal = ApiError("internal error in the model proxy")
            await replies.send_error(
                job.out(self.nc), job.reply, internal, request_id=env.request_id
            )
            await self.serving.ack(job)
        finally:
            self.serving.remove(job)
            self.heartbeats.untrack(job.inflight)
            self.cancels.untrack(job)
            request_id_var.reset(token)

    async def _drop_abandoned(self, msg: Msg, env: Envelope, deployment_id: str) -> None:
        """A request whose caller cancelled it while it was queued: acknowledged, unserved,
        and its reply path closed (see :meth:`_caller_left`)."""
        log.info("dropped a request on %s: its caller left while it was queued", deployment_id)
        if self.stats is not None:
            self.stats.left(deployment_id, queued=True)
        await replies.end_stream(self.nc, env.reply)
        await msg.ack()

    async def _abandon(self, job: Job) -> None:
        """The worker is stopping and its grace period ran out while this request was served.

        Nothing reached the caller yet: the message goes back to the queue at once (``nak``),
        so another worker serves it and the caller never notices. Content was already
        streamed: the stream cannot be resumed elsewhere, so it ends with a clear error.
        """
        try:
            if job.sent:
                exc = ServiceUnavailable(
                    "the worker streaming this answer was stopped; retry the request",
                    code="worker_stopped",
                )
                await replies.send_error(
                    job.out(self.nc),
                    job.reply,
                    exc,
                    deployment=job.deployment_id,
                    attempts=job.attempts,
                    request_id=job.env.request_id,
                )
                await self.serving.ack(job)
            else:
                await job.msg.nak()
        except Exception:  # the connection may be gone too: redelivery after ack_wait then
            log.warning("could not hand back an interrupted request", exc_info=True)

    async def _serve(self, job: Job) -> None:
        target = self.target(job.deployment_id)
        labels = None
        if self.stats is not None and target is not None:
            labels = self.stats.labels(
                job.env.op, target.provider.kind, target.deployment.model, job.deployment_id
            )
            labels.wait.observe(max(0.0, job.started - job.stored_at))
            labels.in_flight.inc()
        self.observer.queue_wait(job)
        hop = NO_HOP
        failure: ApiError | None = None
        adapter: Adapter | None = None
        body = b""
        handed_back = finished = False
        try:
            enough_time(job, self.pace)
            if target is None:
                raise ServiceUnavailable(
                    f"deployment {job.deployment_id} is no longer routed",
                    code=ue.DEPLOYMENT_REMOVED,
                )
            call, keep = await self._prepare(job, target), None
            if call.op in ("responses", "input_tokens"):  # items kept and referenced
                tenant = tenant_of(job.env.tenant, job.env.key_id)
                call = await resolve_references(call, self.items, tenant)
                if self.items.enabled:
                    keep = functools.partial(self.items.keep, tenant=tenant)
            adapter, call = plan(call, self.adapters, self.owners, job.env, keep)
            if not job.cancelled:  # the caller may have left while the key was fetched
                hop = self.observer.call_span(job, target)
                job.called = True
                job.called_at = time.time()
                body = await self._call(job, adapter, call)
            if job.cancelled:  # nobody to answer; acknowledged and billed below
                await self._caller_left(job)
            else:
                job.answer = body
                await self._answer(job, end=self._unbroken(job))
            finished = True
        except ApiError as exc:
            job.undelivered = isinstance(exc, ue.Undelivered)  # (billed all the same)
            if job.cancelled:  # failed on the way out: nobody to answer, nothing to retry
                await self._caller_left(job)
            elif handed_back := await self._hand_back(job, exc):
                failure = exc
            else:
                failure = await self._failed(job, exc, adapter)
            finished = True
        finally:  # else after the replay, if any (``_finish``)
            if not finished or handed_back:
                self.observer.ended(job, target, labels, hop, failure)
        if handed_back:  # in its queue again: whoever takes it next answers and acks it
            return
        await self._finish(job, target, labels, hop, failure)

    async def _finish(
        self,
        job: Job,
        target: Target | None,
        labels: CallLabels | None,
        hop: Hop,
        failure: ApiError | None,
    ) -> None:
        """The replay if needed, then the metrics and the bill: what the caller got (a 502?).
        Then a replay again if the connection the answer went on broke before the bill's
        usage was stored, or before the server answered a ping (:mod:`.replay`)."""
        sent, shown = job.answer, job.usage  # (the bill may set an estimate the answer had not)
        out = job.out(self.nc)
        seen = out.stats["reconnects"]  # (of the connection the last copy went on)
        try:
            if replay_needed(
                answered=sent is not None, ended=job.ended, reconnected=seen != job.reconnects
            ):
                with job.replay():  # a cancel still stops it (Job.done)
                    await self._replay(job)
                seen = sent_on(out)  # this copy's connection: a later break loses it
        finally:  # an error the replay ended with is the bus's, not the provider's
            lost = whole.replay_error(job, sent)
            self.observer.ended(job, target, labels, hop, failure or lost, by_bus=failure is None)
            stored = await self._bill(job, target, labels)
        if sent is not None and not job.cancelled and not (stored and out is self.nc):
            await self.pings.settled(out, seen)  # no stored usage says ``out`` carried it
        if late_replay_needed(
            answered=sent is not None,
            reconnected=sent_on(out) != seen and not out.is_closed,  # (closed: nothing to do)
            cancelled=job.cancelled,
            deadline=job.deadline,
            now=time.time(),
        ):
            job.usage = shown  # the copy says what the first one said
            try:  # (a reconnect's buffer may be full: acknowledged all the same, not re-run)
                with job.replay():
                    await self._replay(job)
            except nats.errors.Error as exc:
                log.warning("could not send an answer again after a reconnect: %r", exc)
        await self.serving.ack(job)

    async def _hand_back(self, job: Job, exc: ApiError) -> bool:
        """Give the request back to its queue when its provider key cannot be fetched here
        (:mod:`.handback`); True once it is back (nothing is answered, billed or acked here)."""
        if job.called or not hand_back(
            exc,
            delivered=job.msg.metadata.num_delivered,
            max_deliver=self.settings.modelproxy.max_deliver,
            left_s=job.deadline - time.time(),
        ):
            return False
        self.heartbeats.untrack(job.inflight)  # no progress signal may follow the nak
        try:
            await job.msg.nak(delay=HAND_BACK_DELAY_S)
        except Exception:  # the connection is gone: redelivered after ack_wait anyway
            log.warning("could not hand back a request on %s", job.deployment_id, exc_info=True)
        if self._handed_back is not None:
            self._handed_back(job.deployment_id)
        if self._handing_back.ready():
            log.warning(
                "%s; handing requests for %s back to the queue for another model-proxy",
                exc.message,
                job.deployment_id,
            )
        return True

    async def _failed(self, job: Job, exc: ApiError, adapter: Adapter | None) -> ApiError:
        """Retry a failed request elsewhere, or answer the failure; returns the failure."""
        if isinstance(exc, ProviderTimeout) and job.deadline - time.time() < _DEADLINE_SLACK_S:
            # The provider's timeouts were cut to the request's deadline (_prepare): what
            # ran out is the caller's deadline, a 504, not a provider failure (502). The
            # provider worked on it, so it is billed like a call whose caller left (billing).
            exc = DeadlineExceeded("the request deadline passed while the provider worked")
        job.status = exc.status
        if (isinstance(exc, SecretMissing) or ue.key_unreachable(exc)) and self._keyless.ready():
            # Every request of the deployment fails this way until an operator stores the
            # key (or Vault answers): say it once in a while (an explorer saw no line at all).
            log.warning("%s; requests for %s fail or go elsewhere", exc.message, job.deployment_id)
        retry = (
            not job.sent
            and retryable(exc)
            and time.time() < job.deadline
            and job.env.op not in COUNTS
            # A key nobody here could fetch, or a field this deployment cannot take, on a
            # route with nowhere else to go: answered here (reroutes.answered_here).
            and not reroutes.answered_here(exc, self._table(), job.env, job.deployment_id)
        )
        if not (retry and await self._reroute(job, exc)):
            # A stream that already told its client in the client's dialect (an error event)
            # still ends in an error, so every bus reader sees it failed; Sy-Error-In-Stream
            # tells a relay (the edges) to add no second error event.
            exc = reroutes.said_here(exc, job.env, job.deployment_id)
            deadlines.named(exc, job.env.deadline_by, self.settings.ingress)  # bus callers'
            job.answer, job.in_stream = reroutes.answer_of(job, exc), ended_in_dialect(adapter)
            await self._answer(job, end=self._unbroken(job))
            if not (isinstance(exc, DeadlineExceeded) or ue.clients_own(exc)):
                log.info(
                    "request failed on %s: %s (%s)", job.deployment_id, exc.message, exc.status
                )
            if job.sent and not job.cancelled:  # after the answer: a slow write holds the ack only
                summary = reroutes.attempt_summary(job.deployment_id, exc)
                await self.sent_failures.failed(job.deployment_id, exc, summary)
        return exc

    def _unbroken(self, job: Job) -> bool:
        """True while everything sent for ``job`` went over one live connection (its own:
        :meth:`Job.unbroken`). Otherwise the start of the answer may have died with the old
        connection while its end gets through: the answer is sent again (``_replay``)."""
        return job.unbroken(self.nc)

    async def _answer(self, job: Job, *, end: bool = True, replay: bool = False) -> None:
        """Send the final message (or error) of ``job.answer``; the terminator if ``end``
        (``replay``: parts lost in a reconnect again are sent again, :mod:`.whole`)."""
        job.ended = end
        if isinstance(job.answer, ApiError):
            await replies.send_error(
                job.out(self.nc),
                job.reply,
                job.answer,
                deployment=job.deployment_id,
                attempts=job.attempts,
                end=end,
                in_stream=job.in_stream,
                request_id=job.env.request_id,
                usage=job.usage if job.in_stream else None,
                chunks=len(job.chunks) if job.in_stream else None,
                priority=job.env.priority,
            )
        elif job.answer is not None:  # (in parts, to a caller that reads them: .whole)
            send = whole.replay_final if replay else whole.send_final
            await send(job.out(self.nc), job, job.answer, end=end)

    async def _replay(self, job: Job) -> None:
        """The connection to NATS broke while this request was answered: what its buffers held
        may be lost. Send the answer again, whole (the caller skips chunks it has, and a second
        final), unless its caller cancels meanwhile. An answer too large to have been kept
        whole (:mod:`.replay`) cannot be sent again: it ends with ``replay_unavailable``."""
        if not job.chunks.complete:
            log.warning("an answer sent across a NATS reconnect was too large to replay")
            job.answer = ServiceUnavailable(REPLAY_LOST, code="replay_unavailable")
            job.status = job.answer.status  # billed and observed as what the caller got
            await self._answer(job)
            return
        log.info("replaying an answer sent across a NATS reconnect (%d chunks)", len(job.chunks))
        for seq, payload in enumerate(job.chunks):
            if job.cancelled:  # its caller left: the end (whole.replay_final) follows
                break
            await self._send_chunk(job, seq, payload)
        await self._answer(job, replay=True)

    def _send_chunk(self, job: Job, seq: int, payload: bytes) -> Coroutine[Any, Any, None]:
        """A chunk's send, to await (no coroutine of its own per chunk): the first one names
        the deployment and the attempts, which an HTTP edge sends as response headers."""
        if seq:
            return replies.send_chunk(job.out(self.nc), job.reply, seq, payload, job.delivery)
        return replies.send_chunk(
            job.out(self.nc),
            job.reply,
            seq,
            payload,
            job.delivery,
            deployment=job.deployment_id,
            attempts=job.attempts,
            priority=job.env.priority,
        )

    async def _prepare(self, job: Job, target: Target) -> ProviderCall:
        body = decode_request_body(job.msg.data)  # a 400 before the key is fetched
        self.upstreams.check(target.provider_name, target.provider)  # before the key is fetched
        key = await self.keys.get(target.provider.secret) if target.provider.secret else None
        # One bus message's worth, or for a whole answer what a caller that reads parts takes
        # (400 if malformed); a stream's chunks are never sent in parts.
        room = self.rooms.of(self.nc.max_payload, "" if job.stream else job.env.parts_max)
        return provider_call(job, target, body, key, room)

    async def _stream(self, job: Job, adapter: Adapter, call: ProviderCall) -> None:
        key = key_echo.needle(call.api_key)
        events = adapter.stream(call)
        try:  # opening chunks wait for the answer's first content (see stream_watch)
            last = await relay(
                job,
                events,
                self._send_chunk,
                echoed=self.echoed,
                key=key,
                provider=call.provider_name,
                begun=lambda job: replies.send_begun(
                    job.out(self.nc), job.reply, job.delivery, job.env.placement
                ),
            )
            if job.usage is None and call.client_wants_usage and not job.cancelled:
                await send_usage_chunk(job, last, self._send_chunk)  # (none came)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None and job.cancelled:
                await close()  # closes the provider's response at once, not at garbage time

    async def _call(self, job: Job, adapter: Adapter, call: ProviderCall) -> bytes:
        """The provider call: the answer's body (b"" for a stream, sent as it came). A cancel
        from the caller ends it at once (``job.stop``), with ``job.cancelled`` set."""
        try:
            async with asyncio.timeout(None) as job.stop:
                if job.stream:
                    await self._stream(job, adapter, call)
                    return b""
                completion = await adapter.complete(call)
        except TimeoutError:
            if not job.cancelled:
                raise
            return b""
        except ue.AnswerTooLarge as exc:  # (an embeddings answer says how many inputs fit)
            raise ue.sized_for(exc, call.op, call.body) from None
        finally:
            job.stop = None
        job.usage = completion.usage  # (billed even when the answer cannot be passed on)
        room = call.max_answer_bytes
        if room and len(completion.body) > room:  # it could not be sent (litellm's answers)
            log.warning(
                "an answer of %d bytes on %s is too large for the bus (max_payload %d)",
                len(completion.body),
                job.deployment_id,
                self.nc.max_payload,
            )
            too_large = ue.too_large(call.provider_name, len(completion.body), room)
            raise ue.sized_for(too_large, call.op, call.body)
        key = key_echo.needle(call.api_key)
        body = self.echoed.masked(completion.body, key, call.provider_name)
        if completion.usage is None:  # shown: the estimate it is billed (.shown_usage)
            body = with_usage(job, body, room)
        return body

    async def _caller_left(self, job: Job) -> None:
        """A request its caller abandoned: nothing is answered, nothing is retried elsewhere.
        A provider call that ran is billed by :meth:`_bill` for what it cost: the provider's
        count if it came, else an estimate (the prompt, and the chunks delivered).

        The reply path still gets its terminator: a caller in the other account reaches this
        worker through a reply mapping the server keeps until the terminator passes (or
        ``response_threshold`` of silence), and under overload many callers leave at once.
        The caller's own inbox has forgotten the request and drops it. One stopped for
        unanswered probes gets an error first: a caller still there learns why."""
        job.status = CLIENT_CLOSED
        if job.inflight.silent:
            await replies.send_error(job.out(self.nc), job.reply, probes.caller_gone())
        else:
            await replies.end_stream(job.out(self.nc), job.reply)
        log.info(
            "request on %s stopped: its caller left (provider called: %s, chunks delivered: %d)",
            job.deployment_id,
            "yes" if job.called else "no",
            len(job.chunks),
        )

    async def _reroute(self, job: Job, exc: ApiError) -> bool:
        """Hand the request back to the heads to try the next deployment.

        Returns True once a head confirmed it has the request; False when none did (no head
        subscribed, or no answer in time): the caller must then be answered here.
        """
        bounced = exc.code == ue.DEPLOYMENT_REMOVED
        out = reroutes.reroute_bounced(job) if bounced else reroutes.reroute_failed(job, exc)
        timeout = max(0.05, min(_REROUTE_CONFIRM_S, job.deadline - time.time()))
        try:
            await self.nc.request(
                subjects.REROUTE, job.msg.data, timeout=timeout, headers=out.encode()
            )
        except nats.errors.Error as failure:
            log.warning(
                "no head took the retry of a request failed on %s (%s); answering the caller",
                job.deployment_id,
                type(failure).__name__,
            )
            return False
        return True

    async def _bill(self, job: Job, target: Target | None, labels: CallLabels | None) -> bool:
        """Record what a provider call cost (:mod:`.billing`), and wait until the usage
        batch is stored (bounded: the publisher gives a batch up after its retries); True
        once it is. The token metric counts the same usage, here only, so it cannot
        drift from spend."""
        if not (job.called or job.streamed_before) or job.env.op in COUNTS:
            return False
        if billing.measures_chunks(job):
            await job.chunks.settle()  # in batches: a large answer never holds the loop
        found = billing.billed(job)
        if found is None:
            return False
        job.usage, estimated = found
        if labels is not None:
            labels.billed(job.usage)
        return await self.usage.add(billing.usage_event(job, target, estimated=estimated))
