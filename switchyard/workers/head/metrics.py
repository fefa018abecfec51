"""What the head exports: routing outcomes, fallbacks, cooldowns, the route table in use."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter

from switchyard.runtime import semconv as sc
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Bounded, Metrics
from switchyard.schemas.routing import RouteTable
from switchyard.workers.head.router import Router

# Routing outcomes (label values of switchyard_routing_attempts_total).
DISPATCHED = "dispatched"  # stored in a deployment's queue (first attempt)
REROUTED = "rerouted"  # stored in another deployment's queue after a failure
EXHAUSTED = "exhausted"  # every attempt failed: the caller got one error
REFUSED = "refused"  # refused before routing (key, model, deadline, no deployment, queue)
STALE = "stale"  # reached after its caller stopped waiting for it: dropped unserved


class HeadMetrics:
    def __init__(
        self, metrics: Metrics, router: Callable[[], Router], cooldowns: Cooldowns
    ) -> None:
        self._attempts = metrics.counter(
            sc.ROUTING_ATTEMPTS,
            "Routing decisions by outcome (dispatched, rerouted after a failure, exhausted...).",
            [sc.OUTCOME],
        )
        self._outcomes = {
            o: self._attempts.labels(o) for o in (DISPATCHED, REROUTED, EXHAUSTED, REFUSED, STALE)
        }
        self._fallbacks: Counter = metrics.counter(
            sc.FALLBACKS,
            "Requests served by a fallback alias instead of the one asked for.",
            [sc.ALIAS, sc.FALLBACK],
        )
        self._cooldowns = metrics.counter(
            sc.COOLDOWNS_STARTED, "Cooldowns this head started, per deployment.", [sc.DEPLOYMENT]
        )
        self._alias = Bounded(500)
        self._deployment = Bounded(1000)
        self._router = router
        self._book = cooldowns
        self._cooled_once: set[str] = set()  # routed deployments that cooled (0 once over)
        metrics.gauge_callback(
            sc.ROUTE_TABLE_REVISION,
            "KV revision of the route table in use.",
            (),
            lambda: [((), float(self._router().revision))],
        )
        metrics.gauge_callback(
            sc.COOLDOWN_ACTIVE,
            "1 while a deployment is cooling down (skipped by every head), 0 after a cooldown "
            "ended while it stays routed.",
            [sc.DEPLOYMENT],
            self._active,
        )
        metrics.gauge_callback(
            sc.COOLDOWN_SECONDS,
            "Seconds left in a deployment's cooldown, 0 after it ended while it stays routed.",
            [sc.DEPLOYMENT],
            self._remaining,
        )

    def routed(self, table: RouteTable) -> None:
        """Create the table's cooldown counters (one per deployment) and fallback counters (one
        per alias and fallback it names) at 0 when the head loads or changes its table:
        Prometheus takes a series' first scraped value as its start, so the first cooldowns
        of a deployment, or the first fallbacks of an alias, were missing from ``increase()``
        (SwitchyardCooldownFlapping, the fallbacks panel)."""
        for deployment in table.deployments():
            self._cooldowns.labels(self._deployment(deployment))
        for alias, route in table.routes.items():
            for fallback in route.fallbacks:
                self._fallbacks.labels(self._alias(alias), self._alias(fallback))

    def outcome(self, outcome: str) -> None:
        self._outcomes[outcome].inc()

    def fallback(self, alias: str, used: str) -> None:
        self._fallbacks.labels(self._alias(alias), self._alias(used)).inc()

    def cooled(self, deployment: str) -> None:
        self._cooldowns.labels(self._deployment(deployment)).inc()

    def _active(self) -> Iterable[tuple[Sequence[str], float]]:
        return [((d,), 1.0 if left > 0 else 0.0) for d, left in self._cooldown_left()]

    def _remaining(self) -> Iterable[tuple[Sequence[str], float]]:
        return [((d,), round(left, 3)) for d, left in self._cooldown_left()]

    def _cooldown_left(self) -> list[tuple[str, float]]:
        """Seconds left in each deployment's cooldown: every one cooling now, and 0 for each
        routed deployment that cooled since this head started (or whose ended cooldown it read
        from the bucket, which keeps entries an hour). A cooldown lasts 5 s by default and
        Prometheus scrapes every 15 s: series that vanished when it ended left most scrapes
        with no series at all, not a 0. A deployment leaves with its route."""
        now = time.time()
        left = {c.deployment: c.until - now for c in self._book.active(now)}
        # Every entry the book holds, ended ones too (active since the start of time): a
        # cooldown that began and ended between two scrapes still leaves its 0.
        known = {c.deployment for c in self._book.active(-math.inf)}
        routed = self._router().table.deployments()
        self._cooled_once = {d for d in self._cooled_once | known | left.keys() if d in routed}
        for deployment in self._cooled_once:
            left.setdefault(deployment, 0.0)
        return sorted(left.items())
