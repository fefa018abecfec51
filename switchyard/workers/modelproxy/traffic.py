"""Per-deployment traffic of this model-proxy, reported to the control service each second.

What a request cost from the platform's point of view (stored in the queue -> final answer,
stored -> first chunk, tokens, errors) is added to per-deployment accumulators (a few integer
additions per request) and published once per second as one :class:`TrafficReport`, only when
something happened. The control service adds the reports of every replica, so the admin UI and
``switchyard top`` show per-deployment rates and percentiles without scraping anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS

from switchyard.bus import subjects
from switchyard.errors import ApiError, DeadlineExceeded, ProviderError
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.monitor import (
    ENCODER,
    LATENCY_BUCKETS_MS,
    TrafficReport,
    TrafficSample,
    bucket_of,
)
from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy.providers.upstream_errors import AnswerTooLarge

REPORT_S = 1.0


def deployment_failed(
    failure: ApiError | None, *, silent_s: float = 0.0, limit_s: float = math.inf
) -> bool:
    """Whether a request that ended with ``failure`` counts as the deployment's error: a 5xx
    (the provider failed, timed out or was unreachable, a key was unavailable) or any provider
    error (its 429 included). A request the client got wrong (a 400 the model-proxy or the
    provider found, a 413) is not: forty malformed requests must not paint a healthy deployment
    red, as the edges' error share counts 5xx only. Nor is an answer too large for the bus (413
    ``answer_too_large``): the provider did its job, and any deployment's answer would be as
    large (it counted, being a provider error).

    The caller's deadline running out (504 ``deadline_exceeded``) is the deployment's error only
    when the provider had by then been silent (called, no first chunk or answer since) for
    ``silent_s`` >= ``limit_s``, the deployment's ``first_token_s``: its own measure of "should
    have started by now". Before the call (the request waited in a busy queue), or a caller
    that gave up sooner (an ``X-Request-Timeout`` of 2 s on a healthy deployment that takes 5
    showed it at 100% errors), is the caller's limit, as when it leaves. A provider that hangs
    is not hidden by it: with the default 600 s deadline and ``request_s`` the deadline is what
    ends a hung non-streamed call, after far longer than ``first_token_s``."""
    if failure is None:
        return False
    if isinstance(failure, DeadlineExceeded):
        return silent_s >= limit_s
    if isinstance(failure, AnswerTooLarge):
        return False
    return failure.status >= 500 or isinstance(failure, ProviderError)


def _zeros() -> list[int]:
    return [0] * len(LATENCY_BUCKETS_MS)


@dataclass(slots=True)
class _Tally:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=_zeros)
    ttft: list[int] = field(default_factory=_zeros)
    input_tokens: int = 0
    output_tokens: int = 0


class TrafficMeter:
    def __init__(self, nc: NATS, instance: str, *, interval: float = REPORT_S) -> None:
        self._nc = nc
        self._instance = instance
        self._subject = subjects.traffic_stats(instance)
        self._interval = interval
        self._tallies: dict[str, _Tally] = {}
        self._since = time.time()
        self._loops = TaskSupervisor("traffic-report")

    def record(
        self,
        deployment: str,
        *,
        latency_s: float | None,
        ttft_s: float | None,
        error: bool,
        usage: Usage | None,
    ) -> None:
        tally = self._tallies.get(deployment)
        if tally is None:
            tally = self._tallies[deployment] = _Tally()
        tally.requests += 1
        tally.errors += error
        if latency_s is not None:  # an answer (see ModelProxy observe: failures have none)
            tally.latency[bucket_of(latency_s * 1000)] += 1
        if ttft_s is not None:
            tally.ttft[bucket_of(ttft_s * 1000)] += 1
        if usage is not None:
            tally.input_tokens += usage.prompt_tokens
            tally.output_tokens += usage.completion_tokens

    def report(self) -> TrafficReport | None:
        """What was recorded since the last report (and reset), or None when nothing was."""
        now = time.time()
        tallies, self._tallies = self._tallies, {}
        since, self._since = self._since, now
        if not tallies:
            return None
        samples = [
            TrafficSample(
                deployment=dep,
                requests=t.requests,
                errors=t.errors,
                latency=t.latency,
                ttft=t.ttft,
                input_tokens=t.input_tokens,
                output_tokens=t.output_tokens,
            )
            for dep, t in tallies.items()
        ]
        return TrafficReport(
            instance=self._instance, at=now, seconds=round(now - since, 3), samples=samples
        )

    def start(self) -> None:
        self._loops.spawn(self._publish())

    async def stop(self) -> None:
        """Send what is left, then stop. Idempotent."""
        await self._loops.cancel_all()
        await self._send()

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._send()

    async def _send(self) -> None:
        report = self.report()
        if report is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):  # monitoring is best effort, never a failure
                await self._nc.publish(self._subject, ENCODER.encode(report))
