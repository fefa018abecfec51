"""A head's cooldown gauges stay at 0 once a cooldown ended, so Prometheus sees it end.

A cooldown lasts 5 s by default and Prometheus scrapes every 15 s: series that existed only
while a deployment cooled were missing from most scrapes (no series, not 0), and a cooldown
that began and ended between two scrapes left no trace. A deployment that cooled once keeps
both series, at 0 after the end, until it leaves the routes.
"""

from __future__ import annotations

import time

import msgspec
import pytest
from nats.aio.client import Client as NATS
from prometheus_client.parser import text_string_to_metric_families

from switchyard.runtime import semconv as sc
from switchyard.runtime.cooldowns import CooldownBook
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.health import PREFIX
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
    decode_route_table,
    deployment_id,
)
from switchyard.workers.head.metrics import HeadMetrics
from switchyard.workers.head.router import Router

pytestmark = pytest.mark.unit

A, B, C = (deployment_id("p", m) for m in ("a", "b", "c"))


def _router(*models: str) -> Router:
    provider = Provider(kind="openai-compatible", api_base="http://p.test/v1")
    routes = {m: Route(deployments=(Deployment(provider="p", model=m),)) for m in models}
    doc = RouteTable(providers={"p": provider}, routes=routes)
    return Router(decode_route_table(msgspec.json.encode(doc)))


def _gauges(metrics: Metrics) -> dict[str, dict[str, float]]:
    """deployment -> {gauge name: value} of the two cooldown gauges."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name in (sc.COOLDOWN_ACTIVE, sc.COOLDOWN_SECONDS):
                out.setdefault(s.labels[sc.DEPLOYMENT], {})[s.name] = s.value
    return out


async def test_a_cooldown_that_ended_leaves_its_gauges_at_0_while_the_deployment_is_routed() -> (
    None
):
    book = CooldownBook(NATS().jetstream())  # not started: cooldowns apply locally only
    router = _router("a", "b", "c")
    metrics = Metrics("head")
    HeadMetrics(metrics, lambda: router, book)
    assert _gauges(metrics) == {}  # nothing cooled yet: no series

    await book.cool(A, 60, status=429, reason="rate limited")
    # B cooled and recovered between two scrapes (another head's cooldown, from the bucket).
    ended = {"deployment": B, "until": time.time() - 1, "status": 502, "reason": "x"}
    book._on_entry(f"{PREFIX}{B}", msgspec.json.encode(ended), 1)
    seen = _gauges(metrics)
    assert seen[A][sc.COOLDOWN_ACTIVE] == 1.0
    assert 55 < seen[A][sc.COOLDOWN_SECONDS] <= 60
    assert seen[B] == {sc.COOLDOWN_ACTIVE: 0.0, sc.COOLDOWN_SECONDS: 0.0}
    assert C not in seen  # never cooled: no series

    # A's cooldown ended early (its key stored: the entry is deleted): 0, not gone.
    book._on_entry(f"{PREFIX}{A}", None, 2)
    assert _gauges(metrics) == {
        A: {sc.COOLDOWN_ACTIVE: 0.0, sc.COOLDOWN_SECONDS: 0.0},
        B: {sc.COOLDOWN_ACTIVE: 0.0, sc.COOLDOWN_SECONDS: 0.0},
    }

    # A leaves the routes: its series go with it; B's stay.
    router = _router("b", "c")
    assert set(_gauges(metrics)) == {B}
    router = _router("a", "b", "c")  # back: it has not cooled since it left
    assert set(_gauges(metrics)) == {B}
