"""The monitor's traffic in one-second points, and the rates the overview shows over a window.

Each deployment has a :class:`Series` of :class:`Second` points filled from the model-proxies'
traffic reports (requests that reached a deployment). The edges' heartbeats fill one more
series with every request they answered, refusals included: :func:`edge_counts` turns two
consecutive beats of one edge into what it answered in between. Rates, shares and percentiles
are taken over the last whole seconds (:func:`complete_seconds`), every one the same way, never
over the second still filling.

Two shares come out of :func:`rates`, and no request counts in both:

* **errors**: answered with a 5xx (every 503 included: ``queue_full``, ``edge_stopping``, the
  edges count by status class). On a deployment's series, what failed on its side.
* **refused**: answered 429 (a full tenant queue, a key's rate, concurrency or budget limit,
  every deployment rate limited), known from the edges only. Client mistakes (400, 401, 404,
  413...) are in neither: they say nothing about the platform's health.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from switchyard.schemas import monitor as m

HISTORY_S = 900  # the UI's charts: 15 minutes
# A second's reports may still be on their way when it ends: sent in its last moments,
# stamped with a model-proxy's clock a little behind this one's. Rates wait this long.
SETTLE_S = 0.25

SERVER_ERRORS = "5xx"  # the edges' status classes (switchyard.ingress.metrics.status_class)
REFUSALS = "429"


@dataclass(slots=True)
class Second:
    t: int
    waiting: int = 0
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    refused: int = 0  # the edges' series only
    input_tokens: int = 0
    output_tokens: int = 0
    latency: list[int] | None = None
    ttft: list[int] | None = None


def complete_seconds(now: float, seconds: int) -> tuple[int, int]:
    """The ``seconds`` whole seconds ``[start, end)`` that are over at ``now``, reports
    included: a second counts from :data:`SETTLE_S` after its end. Reports fill the second
    they are stamped with as they come (one per model-proxy each second, an edge's beat every
    second while it answers), so the second under way holds a report or none depending on when
    it is read: counting it but dividing by ``seconds`` read a steady 5 requests/s as 4.5
    whenever the overview was taken before that second's reports came in."""
    end = math.floor(now - SETTLE_S)
    return end - seconds, end


def add_counts(into: list[int] | None, counts: Sequence[int]) -> list[int]:
    """``counts`` added bucket by bucket into ``into`` (a copy of ``counts`` when None)."""
    if into is None:
        return list(counts)
    for i, c in enumerate(counts):
        into[i] += c
    return into


@dataclass(slots=True)
class Series:
    seconds: deque[Second] = field(default_factory=lambda: deque(maxlen=HISTORY_S))

    def at(self, t: int) -> Second:
        if self.seconds and self.seconds[-1].t == t:
            return self.seconds[-1]
        for point in reversed(self.seconds):  # a late report for a recent second
            if point.t == t:
                return point
            if point.t < t:
                break
        point = Second(t)
        if self.seconds and self.seconds[-1].t > t:
            return point  # too old to keep: dropped
        self.seconds.append(point)
        return point

    def window(self, now: float, seconds: int) -> list[Second]:
        """The points of the last ``seconds`` seconds up to ``now``, the current second (still
        filling) included: what the charts show."""
        start = int(now) - seconds
        return [p for p in self.seconds if p.t > start]

    def complete(self, now: float, seconds: int) -> list[Second]:
        """The points of the last ``seconds`` whole seconds that are over at ``now`` (see
        :func:`complete_seconds`): what :func:`rates` divides by ``seconds``."""
        start, end = complete_seconds(now, seconds)
        return [p for p in self.seconds if start <= p.t < end]


@dataclass(frozen=True, slots=True)
class EdgeCounts:
    """What one edge answered between two of its heartbeats."""

    requests: int = 0
    errors: int = 0  # 5xx
    refused: int = 0  # 429


def edge_counts(now: Mapping[str, int], before: Mapping[str, int]) -> EdgeCounts:
    """The requests an edge answered between two beats of one process, from its totals by
    status class (``2xx``, ``4xx``, ``429``, ``5xx``) since it started; never negative."""
    total = sum(now.values()) - sum(before.values())
    errors = now.get(SERVER_ERRORS, 0) - before.get(SERVER_ERRORS, 0)
    refused = now.get(REFUSALS, 0) - before.get(REFUSALS, 0)
    return EdgeCounts(max(0, total), max(0, errors), max(0, refused))


def share(part: int, whole: int) -> float:
    """``part / whole`` to four places; 0 when there is no whole."""
    return round(part / whole, 4) if whole else 0.0


def rates(points: Iterable[Second], seconds: int, *, refusals: bool = False) -> m.Rates:
    """Rates over ``seconds`` from ``points``, which must be those ``seconds`` whole seconds
    (:meth:`Series.complete`) for the per-second rates to be true. ``refusals``: the points
    count refusals (the edges' series), so the refused share is known; else it is None."""
    requests = errors = refused = tokens = 0
    latency: list[int] | None = None
    ttft: list[int] | None = None
    for p in points:
        requests += p.requests
        errors += p.errors
        refused += p.refused
        tokens += p.input_tokens + p.output_tokens
        if p.latency is not None:
            latency = add_counts(latency, p.latency)
        if p.ttft is not None:
            ttft = add_counts(ttft, p.ttft)
    lat = latency or []
    first = ttft or []
    return m.Rates(
        requests_per_s=round(requests / seconds, 3),
        error_ratio=share(errors, requests),
        refused_ratio=share(refused, requests) if refusals else None,
        p50_ms=_ms(m.percentile(lat, 0.5)),
        p99_ms=_ms(m.percentile(lat, 0.99)),
        ttft_p50_ms=_ms(m.percentile(first, 0.5)),
        ttft_p99_ms=_ms(m.percentile(first, 0.99)),
        tokens_per_s=round(tokens / seconds, 3),
    )


def _ms(value: float | None) -> float | None:
    """A latency estimate to a tenth of a millisecond (its buckets are far wider)."""
    return None if value is None else round(value, 1)
