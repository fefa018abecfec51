"""Monitoring messages: process heartbeats, traffic reports, and the platform overview.

Every process publishes a :class:`Heartbeat` (``stats.v1.process.<component>.<instance>``) every
couple of seconds; model-proxies also publish a :class:`TrafficReport` (``stats.v1.traffic.*``)
each second they served something. The control service merges them with the queue state it reads
from JetStream into one :class:`Overview`, which the admin API, the web UI and ``switchyard top``
show. Latencies travel as counts per fixed bucket (:data:`LATENCY_BUCKETS_MS`), so reports from
many processes add up and percentiles are computed once, where they are shown.
"""

from __future__ import annotations

import bisect

import msgspec

from switchyard.schemas.protocol import UNSTATED_LEVEL

# Upper bounds (ms) of latency buckets: roughly x1.5 steps from 1 ms to 10 minutes.
LATENCY_BUCKETS_MS: tuple[float, ...] = tuple(
    round(1.5**i, 1) for i in range(0, 34)
)  # 1 ms ... ~ 973 s


def bucket_of(ms: float) -> int:
    """The bucket index for a latency in milliseconds (the last bucket takes anything longer)."""
    return min(bisect.bisect_left(LATENCY_BUCKETS_MS, ms), len(LATENCY_BUCKETS_MS) - 1)


def percentile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a bucketed latency distribution in ms, or None when there
    are no samples.

    Estimated as Prometheus' ``histogram_quantile`` does: find the bucket holding the sample
    of rank ``q * total`` and place it linearly between the bucket's lower bound (the previous
    bucket's upper bound; 0 for the first) and its upper bound, by its rank within the
    bucket. The upper bound alone read every latency up to 50% high (a bucket is x1.5 wide).
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = min(max(q, 0.0), 1.0) * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = LATENCY_BUCKETS_MS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS_MS[index]
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
    return LATENCY_BUCKETS_MS[-1]  # not reached: rank <= total


class CallAges(msgspec.Struct, frozen=True, kw_only=True):
    """A model-proxy's calls in flight on one deployment, as its heartbeat reports them."""

    oldest_s: float = 0.0  # since the oldest began to be served here (its queue wait not counted)
    silent_s: float = 0.0  # the longest any of them has gone without a message to its caller


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A process saying it is alive, and what it costs."""

    component: str
    instance: str
    host: str = ""
    pid: int = 0
    ready: bool = True
    started_at: float = 0.0
    cpu_seconds: float = 0.0  # user + system, since start
    rss_bytes: int = 0
    # Edges only: requests answered since start, by status class ("2xx", "4xx", "429", "5xx").
    requests: dict[str, int] = {}
    # The last beat of a process stopping on purpose (SIGTERM: a rollout, a scale-down): it
    # leaves the process table at once instead of turning "silent" and paging as down.
    stopping: bool = False
    # The package version and wire-protocol level (switchyard.schemas.protocol). A process
    # older than these fields sends neither: it reads as level 1 with no version.
    version: str = ""
    protocol: int = UNSTATED_LEVEL
    # Model-proxies only: their calls in flight per deployment (none: no entry). Readers older
    # than the field ignore it (not forbidden), and a beat without it reads as none.
    calls: dict[str, CallAges] = {}


class TrafficSample(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One deployment's traffic in one report interval, as seen by one model-proxy."""

    deployment: str
    requests: int
    errors: int
    latency: list[int]  # counts per LATENCY_BUCKETS_MS: stored in the queue -> final answer
    ttft: list[int]  # counts per bucket: stored in the queue -> first streamed chunk
    input_tokens: int
    output_tokens: int


class TrafficReport(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    at: float
    seconds: float
    samples: list[TrafficSample]


class QueueState(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment's queue, from its JetStream consumer (the platform-wide truth)."""

    waiting: int = 0  # stored, not yet picked up: in dispatch (num_pending) plus held
    held: int = 0  # of those, waiting in HOLD for their fair turn (a saturated deployment)
    in_flight: int = 0  # picked up, not yet acknowledged (num_ack_pending)
    concurrency: int = 0  # max in flight across every model-proxy (max_ack_pending)
    limit: int = 0  # the most it holds before refusing with queue_full
    redelivered: int = 0  # delivered more than once and not yet acknowledged
    oldest_wait_s: float = 0.0  # age of the oldest waiting request
    # Age of the oldest call in flight, from when a model-proxy began serving it (0: none in
    # flight), as the model-proxies' heartbeats last said: a call stalled at its provider,
    # which in_flight alone does not show. Queue wait is not counted (a saturated deployment
    # serving well shows short ages).
    oldest_in_flight_s: float = 0.0
    acked: int = 0  # requests finished since the consumer was created (ack floor)
    # The longest a call in flight has gone without a message to its caller (chunks; from
    # its start before the first): a stream stalled mid-answer (0: none in flight).
    silent_s: float = 0.0


class Rates(msgspec.Struct, frozen=True, kw_only=True):
    """Traffic over a recent window (the overview uses the last 10 seconds)."""

    requests_per_s: float = 0.0
    error_ratio: float = 0.0  # answered with a 5xx (a deployment's: failed on its side)
    # Answered 429 (queue, rate, concurrency or budget limits), of every request the edges
    # answered: the platform's totals only; None where it is not known (a deployment's rates,
    # a control service older than the field, no edge reporting).
    refused_ratio: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tokens_per_s: float = 0.0


class CooldownState(msgspec.Struct, frozen=True, kw_only=True):
    until: float
    seconds_left: float
    status: int
    reason: str


class HeldQueue(msgspec.Struct, frozen=True, kw_only=True):
    """Requests of one tenant and priority waiting in HOLD for a saturated deployment."""

    priority: str
    tenant: str  # the team, else the key id of a key without one
    waiting: int
    oldest_wait_s: float = 0.0


class DeploymentState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    kind: str
    model: str
    aliases: list[str]
    weight: float
    concurrency: int
    queue: QueueState | None = None  # None: the queue could not be read
    rates: Rates = Rates()
    cooldown: CooldownState | None = None
    saturated: bool = False  # its requests wait in HOLD, started in fair order
    held: list[HeldQueue] = []  # by priority and tenant
    key_missing: bool = False  # its provider's secret is not stored (added by the admin side)


class ProcessState(msgspec.Struct, frozen=True, kw_only=True):
    component: str
    instance: str
    host: str
    pid: int
    healthy: bool  # reported in within the last few heartbeats and ready
    ready: bool
    cpu_percent: float
    rss_bytes: int
    uptime_s: float
    last_seen_s: float  # seconds since its last heartbeat
    version: str = ""  # "" from a process older than the field (or an older control)
    protocol: int = UNSTATED_LEVEL  # its wire-protocol level


class ProcessLevel(msgspec.Struct, frozen=True, kw_only=True):
    """One process of an upgrade-order violation."""

    component: str
    instance: str
    version: str
    protocol: int


class UpgradeOrderViolation(msgspec.Struct, frozen=True, kw_only=True):
    """Live processes whose mix of protocol levels breaks the documented upgrade order:
    ``ahead`` were upgraded before every process of ``first`` (``behind``) was."""

    first: str  # the component that must be upgraded first ("head", "modelproxy")
    behind: list[ProcessLevel]  # its live processes at a lower level than some of ``ahead``
    ahead: list[ProcessLevel]  # live processes relying on it, at a higher level
    summary: str  # one line for people: who, at which levels, what to do


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    deployments: list[DeploymentState]
    processes: list[ProcessState]
    totals: Rates
    spend_today_usd: float | None = None  # filled in by the admin side, which reads spend
    upgrade_order: list[UpgradeOrderViolation] = []  # empty while the version mix is safe


class HistoryPoint(msgspec.Struct, frozen=True, array_like=True):
    """One second of one deployment: [t, waiting, in_flight, requests, errors]."""

    t: float
    waiting: int
    in_flight: int
    requests: int
    errors: int


class History(msgspec.Struct, frozen=True, kw_only=True):
    seconds: int
    deployments: dict[str, list[HistoryPoint]]


HEARTBEAT = msgspec.json.Decoder(Heartbeat)
TRAFFIC = msgspec.json.Decoder(TrafficReport)
OVERVIEW = msgspec.json.Decoder(Overview)
HISTORY = msgspec.json.Decoder(History)
ENCODER = msgspec.json.Encoder()
