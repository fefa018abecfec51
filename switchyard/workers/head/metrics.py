"""What the head exports: routing outcomes, fallbacks, cooldowns, the route table in use."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter

from switchyard.runtime import semconv as sc
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Bounded, Metrics
from switchyard.workers.head.router import Router

# Routing outcomes (label values of switchyard_routing_attempts_total).
DISPATCHED = "dispatched"  # stored in a deployment's queue (first attempt)
REROUTED = "rerouted"  # stored in another deployment's queue after a failure
EXHAUSTED = "exhausted"  # every attempt failed: the caller got one error
REFUSED = "refused"  # refused before routing (key, model, deadline, no deployment, queue)


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
            o: self._attempts.labels(o) for o in (DISPATCHED, REROUTED, EXHAUSTED, REFUSED)
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
        metrics.gauge_callback(
            sc.ROUTE_TABLE_REVISION,
            "KV revision of the route table in use.",
            (),
            lambda: [((), float(self._router().revision))],
        )
        metrics.gauge_callback(
            sc.COOLDOWN_ACTIVE,
            "1 while a deployment is cooling down (skipped by every head).",
            [sc.DEPLOYMENT],
            self._active,
        )
        metrics.gauge_callback(
            sc.COOLDOWN_SECONDS,
            "Seconds left in a deployment's cooldown.",
            [sc.DEPLOYMENT],
            self._remaining,
        )

    def outcome(self, outcome: str) -> None:
        self._outcomes[outcome].inc()

    def fallback(self, alias: str, used: str) -> None:
        self._fallbacks.labels(self._alias(alias), self._alias(used)).inc()

    def cooled(self, deployment: str) -> None:
        self._cooldowns.labels(self._deployment(deployment)).inc()

    def _active(self) -> Iterable[tuple[Sequence[str], float]]:
        return [((c.deployment,), 1.0) for c in self._book.active()]

    def _remaining(self) -> Iterable[tuple[Sequence[str], float]]:
        now = time.time()
        return [((c.deployment,), round(c.until - now, 3)) for c in self._book.active(now)]
