"""What a served request tells the operator: its spans, metrics and traffic report.

Kept apart from :mod:`.handler`, which decides what happens to a request; this only records
what happened, at the start of the provider call and when the request ends (answered,
failed, rerouted or stopped because its caller left).
"""

from __future__ import annotations

import time

from opentelemetry.trace import SpanKind

from switchyard.dialects.probes import COUNTS
from switchyard.errors import ApiError, ProviderError
from switchyard.runtime import semconv as sc
from switchyard.runtime.tracing import NO_HOP, Hop, Tracing, genai, span_name
from switchyard.workers.modelproxy.job import Job, Target
from switchyard.workers.modelproxy.metrics import CallLabels, ProxyMetrics
from switchyard.workers.modelproxy.pace import CallTimes
from switchyard.workers.modelproxy.traffic import TrafficMeter, deployment_failed


class Observer:
    """Spans, metrics and the traffic report of the requests one handler serves."""

    def __init__(
        self,
        tracing: Tracing,
        traffic: TrafficMeter | None,
        stats: ProxyMetrics | None,
        pace: CallTimes,
    ) -> None:
        self.tracing = tracing
        self.traffic = traffic
        self.stats = stats
        self.pace = pace

    def queue_wait(self, job: Job) -> None:
        """The span of the time ``job`` waited in its queue (stored -> picked up)."""
        if not self.tracing.enabled:
            return
        env = job.env
        self.tracing.start(
            "queue wait",
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            kind=SpanKind.CONSUMER,
            attributes={"switchyard.deployment": job.deployment_id},
            start_time=job.stored_at,
        ).end(end_time=job.started)

    def call_span(self, job: Job, target: Target) -> Hop:
        """The provider call's span; a reroute of this request continues the trace from it."""
        if not self.tracing.enabled:
            return NO_HOP
        env = job.env
        operation = sc.OPERATIONS.get(env.op, sc.OTHER)
        attributes = genai(
            operation,
            sc.PROVIDERS.get(target.provider.kind, target.provider.kind),
            target.deployment.model,
        )
        attributes["gen_ai.request.stream"] = env.stream
        attributes["switchyard.deployment"] = job.deployment_id
        attributes["switchyard.queue.wait_s"] = round(job.started - job.stored_at, 6)
        hop = self.tracing.start(
            span_name(operation, target.deployment.model),
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        job.env = env.with_(traceparent=hop.traceparent)
        return hop

    def ended(
        self,
        job: Job,
        target: Target | None,
        labels: CallLabels | None,
        hop: Hop,
        failure: ApiError | None,
        *,
        by_bus: bool = False,
    ) -> None:
        """Metrics, traffic report and span of a request that ended (or was cancelled).
        ``by_bus``: ``failure`` (if any) is the bus's, after the provider answered (a replay
        whose parts reconnects kept losing): not counted as the deployment's error."""
        now = time.time()
        usage = job.usage
        if usage is not None:
            hop.set(
                {
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                }
            )
        if job.ttfc is not None:
            hop.set({"gen_ai.response.time_to_first_chunk": job.ttfc})
        # The provider's own status on its call's span (a provider's 500 is a 502 to the
        # client: the edge's span says that); none when it never answered.
        upstream = failure.upstream_status if isinstance(failure, ProviderError) else None
        hop.end(failure, status=upstream, peer=True)
        # Counts stay out of the traffic report: a few milliseconds each, they would halve a
        # deployment's measured time per request (the fair scheduler's window) and its
        # latency in the admin views, for calls that generate nothing. A failed or abandoned
        # request counts as a request (and an error if the deployment failed) but has no
        # latency, for the same reason: a provider's instant 429s or a client's bad requests
        # measured a few ms each, and the heads sent the next burst past fair order.
        answered = failure is None and not job.cancelled
        failed = (
            failure is not None and not by_bus and _deployment_failed(job, target, failure, now)
        )
        if self.traffic is not None and job.env.op not in COUNTS:
            self.traffic.record(
                job.deployment_id,
                latency_s=now - job.dispatched_at if answered else None,
                ttft_s=job.started + job.ttft - job.dispatched_at if job.ttft is not None else None,
                error=failed,
                usage=usage,
            )
        if failure is None and job.called and not job.cancelled and job.env.op not in COUNTS:
            self.pace.record(job.deployment_id, job.env.priority, job.stream, now - job.called_at)
        if labels is None or target is None or self.stats is None:
            return
        labels.in_flight.dec()
        if job.cancelled and failure is None:
            # The caller left while this worker had the request: a provider call was stopped
            # (``serving``; timed under its own error_type, for its duration says nothing of
            # the provider's latency), or none had started (``queued``: dropped unserved, as
            # when a cancel is found at pick-up). Its tokens are counted where it is billed.
            if job.called:
                self.stats.stopped(
                    op=job.env.op,
                    kind=target.provider.kind,
                    model=target.deployment.model,
                    deployment=job.deployment_id,
                    seconds=now - job.called_at,
                )
            else:
                self.stats.left(job.deployment_id, queued=True)
        elif job.called:
            # With a failure, a cancel came only after the call had failed (while the request
            # was handed back to a head for a reroute): the failure is the provider's, and the
            # rerouted request meets the cancel where it is picked up next (counted there).
            self.stats.finished(
                labels,
                op=job.env.op,
                kind=target.provider.kind,
                model=target.deployment.model,
                deployment=job.deployment_id,
                seconds=now - job.called_at,
                ttfc=job.ttfc,
                error=failure,
                failed=failed,
            )


def _deployment_failed(job: Job, target: Target | None, failure: ApiError, now: float) -> bool:
    """:func:`deployment_failed` for ``job``: how long its provider had been silent (called,
    nothing back yet) against the deployment's ``first_token_s``."""
    if target is None or not job.called or job.ttft is not None:
        return deployment_failed(failure)
    timeouts = target.timeouts
    return deployment_failed(failure, silent_s=now - job.called_at, limit_s=timeouts.first_token_s)
