"""The two signals of a provider key nobody can have: the ``Retry-After`` of the head's answer
when the last attempt failed for want of its key, and the model-proxy's gauge of the
deployments it pauses for that (``switchyard_modelproxy_key_paused``).

The end-to-end checks (HTTP header, real scrape) are in tests/test_key_unavailable_answers.py.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.bus.envelope import Deadline, Envelope
from switchyard.errors import ProviderError, ServiceUnavailable
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.secret_cache import UNAVAILABLE_RETRY_S, unavailable
from switchyard.workers.head.decide import KEY_RETRY_S, exhausted
from switchyard.workers.modelproxy.key_pause import KeyPauses
from switchyard.workers.modelproxy.metrics import ProxyMetrics

pytestmark = pytest.mark.unit

A, B = "prov--a", "prov--b"
NO_KEY = "provider key `k` is unavailable: the secrets service is not running"


def _env(*tried: str, last_status: int, errors: str) -> Envelope:
    env = Envelope(request_id="req-1", alias="chat", reply="_INBOX.x", op="chat")
    return env.with_(
        deadline=Deadline.after(60), tried=tried, last_status=last_status, errors=errors
    )


def test_the_one_attempt_without_its_key_says_when_to_retry() -> None:
    exc = exhausted(_env(A, last_status=503, errors=f"{A}: 503 {NO_KEY}"))
    assert isinstance(exc, ServiceUnavailable)
    assert (exc.status, exc.code, exc.retry_after) == (503, "secret_unavailable", KEY_RETRY_S)
    # The model-proxy's own 503 for the same key (a route with nowhere else to go) says the same.
    assert KEY_RETRY_S == unavailable("k", "down").retry_after == UNAVAILABLE_RETRY_S


def test_a_candidate_cooling_down_keeps_its_return_as_the_answer() -> None:
    """Its return is when a deployment that failed for a cause that passes may answer; the
    key comes back only when Vault or an operator acts (tests/unit/test_routing_logic.py)."""
    env = _env(A, last_status=503, errors=f"{A}: 503 {NO_KEY}")
    assert exhausted(env, retry_after=7.0, cooling=(B,)).retry_after == 7.0


def test_every_attempt_without_its_key_says_when_to_retry_too() -> None:
    """A route and its fallback, both without their key (Vault down): 502 as before, now with
    ``Retry-After``; a last attempt that reached its provider keeps its own answer."""
    errors = f"{A}: 503 {NO_KEY}; {B}: 503 {NO_KEY}"
    exc = exhausted(_env(A, B, last_status=503, errors=errors))
    assert isinstance(exc, ProviderError)
    assert (exc.status, exc.code, exc.retry_after) == (502, "all_deployments_failed", KEY_RETRY_S)
    failed = exhausted(_env(A, B, last_status=502, errors=f"{A}: 503 {NO_KEY}; {B}: 502 boom"))
    assert (failed.status, failed.retry_after) == (502, None)  # B cools: routing.cooldown_s


def test_a_removal_reported_by_an_old_model_proxy_keeps_its_second() -> None:
    gone = f"{A}: 503 deployment {A} is no longer routed"
    exc = exhausted(_env(A, last_status=503, errors=gone))
    assert (exc.code, exc.retry_after) == ("deployment_removed", 1.0)


class _Puller:
    def __init__(self) -> None:
        self.resumed = asyncio.Event()

    def pause(self) -> None:
        self.resumed.clear()

    async def resume(self, first: int | None = None) -> None:
        self.resumed.set()


def _gauge(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        s.labels["deployment"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sc.KEY_PAUSED
    }


async def test_the_gauge_is_1_while_a_deployment_is_paused_and_0_after() -> None:
    metrics = Metrics("modelproxy")
    stats = ProxyMetrics(metrics)
    pullers = {A: _Puller(), B: _Puller()}
    key: list[Exception | None] = [unavailable("k", "Vault/OpenBao is unreachable")]

    async def fetch(name: str) -> object:
        if key[0] is not None:
            raise key[0]
        return "sk-value"

    pauses = KeyPauses(
        pullers.get,
        lambda _dep: "k",
        fetch,
        probe_every_s=0.01,
        longest_s=30.0,
        shown=stats.paused,
    )
    stats.labels("chat", "openai-compatible", "m", B)  # B served a request: 0, not absent
    assert _gauge(metrics) == {B: 0.0}
    pauses.handed_back(A)
    pauses.handed_back(B)
    assert _gauge(metrics) == {A: 1.0, B: 1.0}
    key[0] = None  # the key is fetched: A pulls again
    await asyncio.wait_for(pullers[A].resumed.wait(), 5)
    assert _gauge(metrics)[A] == 0.0
    pauses.handed_back(A)
    assert _gauge(metrics)[A] == 1.0
    await pauses.forget(A)  # taken out of the routes
    await pauses.stop()  # B was still paused
    assert _gauge(metrics) == {A: 0.0, B: 0.0}
