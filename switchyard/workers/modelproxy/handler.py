"""Serve one dispatched request: check it, call the provider, stream the reply, account, ack.

Order matters for "never lose a request": the reply goes out first, then the usage event is
stored, and only then is the JetStream message acknowledged. A worker that dies before the ack
leaves the request to be redelivered to another worker. A retryable provider failure before any
content reached the caller goes back to the heads (``llm.v1.reroute``) for the next deployment;
once content was sent, a failure ends the stream with an error message instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.config import Settings
from switchyard.errors import ApiError, DeadlineExceeded, InvalidRequest, ServiceUnavailable
from switchyard.schemas.events import USAGE_ENCODER, UsageEvent
from switchyard.schemas.openai import Usage
from switchyard.schemas.routing import Deployment, Provider, RouteTable
from switchyard.secrets.client import SecretCache
from switchyard.telemetry import request_id_var
from switchyard.workers.modelproxy.heartbeat import Heartbeats, InFlight
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.registry import Adapters
from switchyard.workers.modelproxy.providers.upstream_errors import retryable

log = logging.getLogger("switchyard.modelproxy")

_BODY = msgspec.json.Decoder(dict[str, Any])
_OPS = frozenset({"chat", "complete", "embed"})
_MAX_ERRORS_HEADER = 900


@dataclass(frozen=True, slots=True)
class Target:
    provider_name: str
    provider: Provider
    deployment: Deployment


class Handler:
    def __init__(
        self,
        nc: NATS,
        settings: Settings,
        adapters: Adapters,
        keys: SecretCache,
        heartbeats: Heartbeats,
        table: Callable[[], RouteTable],
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5)
        self.settings = settings
        self.adapters = adapters
        self.keys = keys
        self.heartbeats = heartbeats
        self._table = table
        self._targets: dict[tuple[int, str], Target] = {}

    def target(self, deployment_id: str) -> Target | None:
        table = self._table()
        cache_key = (id(table), deployment_id)
        found = self._targets.get(cache_key)
        if found is None:
            pair = table.deployments().get(deployment_id)
            if pair is None:
                return None
            provider, deployment = pair
            found = Target(deployment.provider, provider, deployment)
            if len(self._targets) > 4096:
                self._targets.clear()
            self._targets[cache_key] = found
        return found

    async def handle(self, msg: Msg, deployment_id: str) -> None:
        """Serve ``msg``; never raises (one error boundary per message)."""
        headers = msg.headers or {}
        reply = headers.get(h.REPLY, "")
        op = headers.get(h.OP, "")
        if not reply or op not in _OPS:
            log.warning(
                "terminated a malformed dispatch message on %s (no reply or op)", msg.subject
            )
            await msg.term()
            return
        token = request_id_var.set(headers.get(h.REQUEST_ID))
        inflight = self.heartbeats.track(reply, msg)
        try:
            await self._serve(msg, headers, reply, op, deployment_id, inflight)
        except Exception:  # the message's error boundary: answer, log, keep the worker alive
            log.exception("internal error serving a request")
            await replies.send_error(self.nc, reply, ApiError("internal error in the model proxy"))
            await msg.ack()
        finally:
            self.heartbeats.untrack(inflight)
            request_id_var.reset(token)

    async def _serve(
        self,
        msg: Msg,
        headers: dict[str, str],
        reply: str,
        op: str,
        deployment_id: str,
        inflight: InFlight,
    ) -> None:
        started = time.time()
        deadline = h.int_header(headers, h.DEADLINE, 0) / 1000
        meta = msg.metadata
        delivery = f"{headers.get(h.ATTEMPT, '1')}.{meta.num_delivered}"
        attempts = len([t for t in headers.get(h.TRIED, "").split(",") if t]) + 1
        target = self.target(deployment_id)
        stream = headers.get(h.STREAM) == "1"
        sent = False
        called = False
        usage: Usage | None = None
        status = 200
        ttft: float | None = None
        try:
            if deadline <= started:
                raise DeadlineExceeded("the request deadline passed while it was queued")
            if target is None:
                raise ServiceUnavailable(
                    f"deployment {deployment_id} is no longer routed", code="deployment_removed"
                )
            body = _decode_body(msg.data)
            body["model"] = target.deployment.model
            key = await self.keys.get(target.provider.secret) if target.provider.secret else None
            timeouts = target.deployment.timeouts or target.provider.timeouts
            remaining = deadline - time.time()
            if remaining <= 0:
                raise DeadlineExceeded("the request deadline passed before the provider was called")
            options = body.get("stream_options")
            call = ProviderCall(
                op=op,
                body=body,
                stream=stream,
                client_wants_usage=bool(isinstance(options, dict) and options.get("include_usage")),
                provider=target.provider,
                provider_name=target.provider_name,
                deployment=target.deployment,
                api_key=key,
                first_token_timeout=min(timeouts.first_token_s, remaining),
                total_timeout=min(timeouts.stream_s if stream else timeouts.request_s, remaining),
            )
            adapter = self.adapters.for_kind(target.provider.kind)
            called = True
            done = {h.DEPLOYMENT: deployment_id, h.ATTEMPTS: str(attempts)}
            if stream:
                loop = asyncio.get_running_loop()
                seq = 0
                async for event in adapter.stream(call):
                    if event.usage is not None:
                        usage = event.usage
                    if event.payload is not None:
                        await replies.send_chunk(self.nc, reply, seq, event.payload, delivery)
                        if seq == 0:
                            ttft = time.time() - started
                        seq += 1
                        sent = True
                        inflight.touch(loop.time())
                await replies.send_final(self.nc, reply, b"", done)
            else:
                completion = await adapter.complete(call)
                usage = completion.usage
                await replies.send_final(self.nc, reply, completion.body, done)
        except ApiError as exc:
            status = exc.status
            if not sent and retryable(exc) and time.time() < deadline:
                await self._reroute(msg, headers, deployment_id, exc)
            else:
                extra = {h.DEPLOYMENT: deployment_id, h.ATTEMPTS: str(attempts)}
                await replies.send_error(self.nc, reply, exc, extra)
                if not isinstance(exc, DeadlineExceeded | InvalidRequest):
                    log.info(
                        "request failed on %s: %s (%s)", deployment_id, exc.message, exc.status
                    )
        if called and (usage is not None or status == 200):
            await self._publish_usage(
                headers, deployment_id, target, op, stream, status, usage, started, ttft
            )
        await msg.ack()

    async def _reroute(
        self, msg: Msg, headers: dict[str, str], deployment_id: str, exc: ApiError
    ) -> None:
        """Hand the request back to the heads to try the next deployment."""
        out = dict(headers)
        tried = [t for t in out.get(h.TRIED, "").split(",") if t]
        tried.append(deployment_id)
        out[h.TRIED] = ",".join(tried)
        summary = f"{deployment_id}: {exc.status} {exc.message}".replace(";", ",")[:200]
        errors = out.get("Sy-Errors", "")
        out["Sy-Errors"] = (f"{errors}; {summary}" if errors else summary)[-_MAX_ERRORS_HEADER:]
        out["Sy-Last-Status"] = str(exc.status)
        if exc.retry_after is not None:
            out[h.RETRY_AFTER] = f"{exc.retry_after:g}"
        out.pop(h.NATS_MSG_ID, None)
        await self.nc.publish(subjects.REROUTE, msg.data, headers=out)

    async def _publish_usage(
        self,
        headers: dict[str, str],
        deployment_id: str,
        target: Target | None,
        op: str,
        stream: bool,
        status: int,
        usage: Usage | None,
        started: float,
        ttft: float | None,
    ) -> None:
        request_id = headers.get(h.REQUEST_ID, "")
        event_id = f"{request_id}:{headers.get(h.ATTEMPT, '1')}:{headers.get(h.TRIED, '')}"
        u = usage or Usage()
        event = UsageEvent(
            id=event_id,
            request_id=request_id,
            ts=time.time(),
            op=op,
            alias=headers.get(h.ALIAS, ""),
            deployment=deployment_id,
            provider=target.provider_name if target else "",
            model=target.deployment.model if target else "",
            key_id=headers.get(h.KEY_ID, ""),
            tenant=headers.get(h.TENANT, ""),
            stream=stream,
            status=status,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            total_tokens=u.total_tokens,
            latency_ms=round((time.time() - started) * 1000, 3),
            ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
        )
        try:
            await self.js.publish(
                subjects.USAGE, USAGE_ENCODER.encode(event), headers={h.NATS_MSG_ID: event_id}
            )
        except Exception:  # accounting must not fail the request; the event id allows replay
            log.exception("could not store the usage event %s", event_id)


def _decode_body(data: bytes) -> dict[str, Any]:
    try:
        return _BODY.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise InvalidRequest("request body is not a JSON object", code="invalid_json") from None
