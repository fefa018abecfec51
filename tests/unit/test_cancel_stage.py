"""``switchyard_cancelled_requests_total{stage}`` says what a cancel stopped.

``serving``: a provider call was under way and was stopped. ``queued``: the request was
dropped before any provider call (at pick-up, or while its provider key was fetched). A
cancel that lands after the call failed (while the request is handed back to a head for a
reroute) stopped nothing here: the failure is counted as the provider's, and the rerouted
request meets the cancel where it is picked up next. A stopped call is timed under
``error_type="cancelled"``: apart from the successes' latency, and no provider error. Real
metrics registry; the request's state is set as the handler leaves it.
"""

from __future__ import annotations

import time

from nats.aio.msg import Msg

from switchyard.bus.envelope import Envelope
from switchyard.errors import ApiError, ProviderError
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.semconv import CALLER_LEFT
from switchyard.runtime.tracing import NO_HOP, OFF
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job, Target
from switchyard.workers.modelproxy.metrics import ProxyMetrics
from switchyard.workers.modelproxy.observe import Observer
from switchyard.workers.modelproxy.pace import CallTimes
from switchyard.workers.modelproxy.traffic import TrafficMeter

DEPLOYMENT = "fake.echo"
TARGET = Target(
    provider_name="fake",
    provider=Provider(kind="openai", api_base="http://127.0.0.1:9/v1"),
    deployment=Deployment(provider="fake", model="echo"),
)


def _observer() -> tuple[Observer, Metrics]:
    metrics = Metrics("modelproxy")
    return Observer(OFF, None, ProxyMetrics(metrics), CallTimes()), metrics


def _job(*, called: bool, cancelled: bool) -> Job:
    stored = time.time_ns() - 1_000_000
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject=f"llm.v1.dispatch.{DEPLOYMENT}",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=b"{}",
    )
    env = Envelope(request_id="r1", op="chat", reply="_INBOX_edge.r1", key_hash="h")
    job = Job(
        msg=msg,
        env=env,
        deployment_id=DEPLOYMENT,
        inflight=InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0),
    )
    job.called, job.cancelled = called, cancelled
    if called:
        job.called_at = time.time()
    return job


def _end(observer: Observer, job: Job, failure: ApiError | None = None) -> None:
    """End ``job`` as the handler does: in flight while served, then observed."""
    assert observer.stats is not None
    labels = observer.stats.labels(job.env.op, "openai", "echo", DEPLOYMENT)
    labels.in_flight.inc()
    observer.ended(job, TARGET, labels, NO_HOP, failure)


def _cancelled(metrics: Metrics, stage: str) -> float:
    value = metrics.registry.get_sample_value(
        sc.CANCELLED, {sc.DEPLOYMENT: DEPLOYMENT, sc.STAGE: stage}
    )
    return value or 0.0


async def test_a_cancel_before_the_provider_call_is_queued_one_during_it_serving() -> None:
    observer, metrics = _observer()
    # The caller left while the provider key was fetched: no provider call was made.
    _end(observer, _job(called=False, cancelled=True))
    assert (_cancelled(metrics, "queued"), _cancelled(metrics, "serving")) == (1.0, 0.0)
    # The caller left while the provider worked: the call was stopped.
    _end(observer, _job(called=True, cancelled=True))
    assert (_cancelled(metrics, "queued"), _cancelled(metrics, "serving")) == (1.0, 1.0)
    in_flight = metrics.registry.get_sample_value(sc.IN_FLIGHT, {sc.DEPLOYMENT: DEPLOYMENT})
    assert in_flight == 0.0


async def test_a_cancel_during_a_reroute_leaves_the_provider_failure_counted() -> None:
    observer, metrics = _observer()
    failed = ProviderError("upstream 503", provider=DEPLOYMENT, upstream_status=503)
    _end(observer, _job(called=True, cancelled=True), failed)
    assert (_cancelled(metrics, "queued"), _cancelled(metrics, "serving")) == (0.0, 0.0)
    errors = metrics.registry.get_sample_value(
        sc.PROVIDER_ERRORS, {sc.DEPLOYMENT: DEPLOYMENT, sc.ERROR_TYPE: "provider_error"}
    )
    assert errors == 1.0


async def test_a_stopped_call_is_timed_apart_and_is_no_provider_error() -> None:
    observer, metrics = _observer()
    _end(observer, _job(called=True, cancelled=True))
    _end(observer, _job(called=False, cancelled=True))  # no call: nothing to time

    def calls(error_type: str) -> float | None:
        labels = {
            sc.OPERATION: "chat",
            sc.PROVIDER: "openai",
            sc.REQUEST_MODEL: "echo",
            sc.DEPLOYMENT: DEPLOYMENT,
            sc.ERROR_TYPE: error_type,
        }
        return metrics.registry.get_sample_value(f"{sc.CLIENT_OPERATION_DURATION}_count", labels)

    assert calls(CALLER_LEFT) == 1.0
    assert not calls("")  # the latency of successful calls is left alone
    errors = [
        sample
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == sc.PROVIDER_ERRORS
    ]
    assert not errors


def test_only_answers_are_timed_in_the_traffic_report() -> None:
    """A provider's instant 429 (or a client's bad request, or a caller who left) counts as a
    request but is not timed: timed, a few milliseconds each, they made the deployment's
    measured time per request (the fair scheduler's window) tiny, and the next burst went to
    dispatch first come first served once the provider was back at its pace (an explorer's
    3-of-3 repro)."""
    traffic = TrafficMeter(None, "mp-1")  # type: ignore[arg-type]  # report() only, no publish
    observer = Observer(OFF, traffic, None, CallTimes())
    answered = _job(called=True, cancelled=False)
    observer.ended(answered, TARGET, None, NO_HOP, None)
    limited = _job(called=True, cancelled=False)
    observer.ended(limited, TARGET, None, NO_HOP, ProviderError("slow down", provider="fake"))
    left = _job(called=True, cancelled=True)
    observer.ended(left, TARGET, None, NO_HOP, None)
    report = traffic.report()
    assert report is not None
    (sample,) = report.samples
    assert sample.requests == 3
    assert sample.errors == 1
    assert sum(sample.latency) == 1  # the answer alone
