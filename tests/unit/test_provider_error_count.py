"""``switchyard_provider_errors_total`` counts what failed on the deployment's side, as the
Overview's and ``switchyard top``'s error share do (``traffic.deployment_failed``): it feeds
``deployment:switchyard_provider_error_ratio:rate5m`` and SwitchyardDeploymentErrorRatioHigh.
A client's bad request is still timed under its ``error_type``, where it stays visible.
Real metrics registry; the request's state is set as the handler leaves it."""

from __future__ import annotations

import time

from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
)
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.tracing import NO_HOP, OFF
from switchyard.workers.modelproxy.metrics import ProxyMetrics
from switchyard.workers.modelproxy.observe import Observer
from switchyard.workers.modelproxy.pace import CallTimes
from switchyard.workers.modelproxy.providers.upstream_errors import (
    closed_early,
    from_status,
    unreachable,
)
from switchyard.workers.modelproxy.traffic import TrafficMeter
from tests.unit.test_cancel_stage import DEPLOYMENT, TARGET, _job


def _ended(failures: list[ApiError | None]) -> Metrics:
    metrics = Metrics("modelproxy")
    stats = ProxyMetrics(metrics)
    observer = Observer(OFF, None, stats, CallTimes())
    for failure in failures:
        labels = stats.labels("chat", "openai", "echo", DEPLOYMENT)
        labels.in_flight.inc()
        observer.ended(_job(called=True, cancelled=False), TARGET, labels, NO_HOP, failure)
    return metrics


def _errors(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels[sc.ERROR_TYPE]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == sc.PROVIDER_ERRORS
    }


def _calls(metrics: Metrics, error_type: str) -> float:
    labels = {
        sc.OPERATION: "chat",
        sc.PROVIDER: "openai",
        sc.REQUEST_MODEL: "echo",
        sc.DEPLOYMENT: DEPLOYMENT,
        sc.ERROR_TYPE: error_type,
    }
    value = metrics.registry.get_sample_value(f"{sc.CLIENT_OPERATION_DURATION}_count", labels)
    return value or 0.0


def test_a_clients_bad_request_is_timed_but_is_no_provider_error() -> None:
    """An explorer's repro: client 400s fired SwitchyardDeploymentErrorRatioHigh while the
    Overview and top showed the deployment at 0% errors."""
    metrics = _ended(
        [
            InvalidRequest("messages[0].content[0]: expected an object, got a number"),
            from_status(400, "context too long", provider="fake"),
            None,
        ]
    )
    assert _errors(metrics) == {}
    assert _calls(metrics, "invalid_request") == 1.0
    assert _calls(metrics, "provider_rejected_request") == 1.0
    assert _calls(metrics, "") == 1.0


def test_the_deployments_own_failures_are_provider_errors() -> None:
    metrics = _ended(
        [
            ProviderError("upstream 500", provider="fake", upstream_status=500),
            ProviderTimeout("slow", provider="fake"),
            from_status(401, "bad key", provider="fake"),
        ]
    )
    assert _errors(metrics) == {
        "provider_error": 1.0,
        "provider_timeout": 1.0,
        "provider_auth_error": 1.0,
    }


def test_a_provider_that_hung_up_mid_answer_is_counted_apart_from_an_unreachable_one() -> None:
    """An SRE's alert on ``error_type="provider_unreachable"`` fired for a provider that was
    reached and closed the connection mid-answer: the network was fine."""
    metrics = _ended([closed_early("fake"), unreachable("fake", "cannot connect to x:1")])
    assert _errors(metrics) == {"provider_disconnected": 1.0, "provider_unreachable": 1.0}
    assert _calls(metrics, "provider_disconnected") == 1.0


def test_the_callers_deadline_is_timed_apart_and_is_no_provider_error() -> None:
    """A client's ``X-Request-Timeout: 2`` on a healthy deployment that takes 5 s: the
    caller gave up (504 ``deadline_exceeded``), as one that leaves does. Neither the metric
    nor the traffic report behind the Overview and top count it as the deployment's error."""
    late = DeadlineExceeded("the request deadline passed while the provider worked")
    metrics = _ended([late, None])
    assert _errors(metrics) == {}
    assert _calls(metrics, "deadline_exceeded") == 1.0
    assert _calls(metrics, "") == 1.0
    traffic = TrafficMeter(None, "mp-1")  # type: ignore[arg-type]  # report() only
    observer = Observer(OFF, traffic, None, CallTimes())
    observer.ended(_job(called=True, cancelled=False), TARGET, None, NO_HOP, late)
    timed_out = ProviderTimeout("provider fake timed out", provider="fake")
    observer.ended(_job(called=True, cancelled=False), TARGET, None, NO_HOP, timed_out)
    report = traffic.report()
    assert report is not None
    (sample,) = report.samples
    assert (sample.requests, sample.errors) == (2, 1)  # the provider's own timeout counts


def test_a_provider_silent_past_first_token_s_is_the_deployments_error_at_the_deadline() -> None:
    """A reviewer's case: with the default 600 s deadline and `request_s`, the caller's deadline
    is what ends a hung non-streamed call (504 `deadline_exceeded`). A provider silent for
    longer than the deployment's `first_token_s` (60 s) by then is failing, not the caller
    impatient: counted, in the metric and in the traffic report behind the Overview and top."""
    late = DeadlineExceeded("the request deadline passed while the provider worked")
    metrics = Metrics("modelproxy")
    stats = ProxyMetrics(metrics)
    traffic = TrafficMeter(None, "mp-1")  # type: ignore[arg-type]  # report() only
    observer = Observer(OFF, traffic, stats, CallTimes())
    for silent_s, started in ((61.0, False), (59.0, False), (120.0, True)):
        job = _job(called=True, cancelled=False)
        job.called_at = time.time() - silent_s
        if started:
            job.ttft = 0.5  # a first chunk came: the stream ran on past the caller's limit
        labels = stats.labels("chat", "openai", "echo", DEPLOYMENT)
        labels.in_flight.inc()
        observer.ended(job, TARGET, labels, NO_HOP, late)
    assert _errors(metrics) == {"deadline_exceeded": 1.0}
    report = traffic.report()
    assert report is not None
    (sample,) = report.samples
    assert (sample.requests, sample.errors) == (3, 1)
