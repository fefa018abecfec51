"""What the model-proxy exports: its calls to providers (GenAI client conventions), queue wait,
requests in flight, provider errors by class, secret-cache hits, usage events, and the
deployments it does not pull for want of their provider keys (:mod:`.key_pause`).

The GenAI client histograms carry the ``deployment`` label besides the convention's attributes:
two deployments of one model on two accounts of the same provider kind must not merge, and the
alert rules read latency, time to first chunk and error ratio per deployment. A deployment
determines its provider and model, so the label adds no series beyond one per deployment.

The token histogram counts what each provider call is billed, from the usage its usage event
carries (:meth:`CallLabels.billed`): the provider's count, or the estimate billed without one
(a stream cut short or failed after content, a call stopped because its caller left or its
deadline passed). So tokens times price is spend, per deployment. A call stopped because its
caller left is timed under ``error_type`` ``sc.CALLER_LEFT``: a provider call was made (the
error ratio's denominator counts it), it is no provider error
(``switchyard_provider_errors_total`` does not count it), and its cut-short duration stays out
of the latency of successful calls.

``switchyard_provider_errors_total`` counts the deployment's failures only, by the rule the
Overview's and ``switchyard top``'s error share use (:func:`.traffic.deployment_failed`): a
request the client got wrong (a 400 the model-proxy or the provider found), or a call stopped
because its caller's deadline passed before the provider had been silent past its
``first_token_s`` (``deadline_exceeded``: the caller gave up), is timed under its
``error_type`` and is no provider error, or forty malformed requests fired the deployment's
error-ratio alert while the admin views showed 0%."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from switchyard.errors import ApiError
from switchyard.runtime import semconv as sc
from switchyard.runtime.error_labels import error_class
from switchyard.runtime.metrics import Bounded, Metrics
from switchyard.runtime.secret_cache import SecretCache
from switchyard.schemas.openai import Usage
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.response_items import ResponseItems
from switchyard.workers.modelproxy.usage import UsageBatcher

# The error classes of a deployment's own failures (``switchyard_provider_errors_total``),
# created at zero for every routed deployment: see :meth:`ProxyMetrics.routed`.
FAILURE_CLASSES = (
    "provider_error",
    "rate_limit_exceeded",
    "provider_timeout",
    "provider_unreachable",
    "provider_disconnected",
    "provider_overloaded",
    "provider_auth_error",
)


class CallLabels:
    """Cached label children for one deployment (the hot path does dict lookups only)."""

    __slots__ = ("duration", "in_flight", "input_tokens", "output_tokens", "ttfc", "wait")

    def __init__(self, m: ProxyMetrics, op: str, provider: str, model: str, dep: str) -> None:
        labels = (sc.OPERATIONS.get(op, sc.OTHER), provider, model, dep)
        self.duration = m.duration.labels(*labels, "")
        self.ttfc = m.ttfc.labels(*labels)
        self.input_tokens = m.tokens.labels(*labels, "input")
        self.output_tokens = m.tokens.labels(*labels, "output")
        self.wait = m.wait.labels(dep)
        self.in_flight = m.in_flight.labels(dep)
        m.key_paused.labels(dep)  # 0 from the deployment's first request on, not absent

    def billed(self, usage: Usage) -> None:
        """The tokens one provider call is billed (the usage of its usage event)."""
        self.input_tokens.observe(usage.prompt_tokens)
        self.output_tokens.observe(usage.completion_tokens)


class ProxyMetrics:
    def __init__(self, metrics: Metrics) -> None:
        genai = (sc.OPERATION, sc.PROVIDER, sc.REQUEST_MODEL, sc.DEPLOYMENT)
        self.duration: Histogram = metrics.histogram(
            sc.CLIENT_OPERATION_DURATION,
            "Duration of provider calls (GenAI client operation duration).",
            [*genai, sc.ERROR_TYPE],
            sc.DURATION_BUCKETS,
        )
        self.ttfc: Histogram = metrics.histogram(
            sc.CLIENT_TIME_TO_FIRST_CHUNK,
            "Time from the provider call to its first streamed chunk.",
            genai,
            sc.DURATION_BUCKETS,
        )
        self.tokens: Histogram = metrics.histogram(
            sc.CLIENT_TOKEN_USAGE,
            "Tokens billed per provider call (the provider's count, or the estimate billed "
            "without one), by type (input, output).",
            [*genai, sc.TOKEN_TYPE],
            sc.TOKEN_BUCKETS,
        )
        self.wait: Histogram = metrics.histogram(
            sc.QUEUE_WAIT,
            "Time a request waited in its deployment's queue (held for fair order included)"
            " before a worker took it.",
            [sc.DEPLOYMENT],
            sc.WAIT_BUCKETS,
        )
        self.in_flight: Gauge = metrics.gauge(
            sc.IN_FLIGHT, "Requests this process is serving, per deployment.", [sc.DEPLOYMENT]
        )
        self.key_paused: Gauge = metrics.gauge(
            sc.KEY_PAUSED,
            "1 while this process does not pull a deployment's requests because its provider "
            "key cannot be fetched here (key_pause); 0 once it pulls again.",
            [sc.DEPLOYMENT],
        )
        self.errors: Counter = metrics.counter(
            sc.PROVIDER_ERRORS,
            "Provider calls that failed on the deployment's side, by error class (the OpenAI "
            "error code); a client's bad request is no provider error.",
            [sc.DEPLOYMENT, sc.ERROR_TYPE],
        )
        self.cancelled: Counter = metrics.counter(
            sc.CANCELLED,
            "Requests whose caller left, by stage: queued (dropped unserved) or serving "
            "(the provider call was stopped).",
            [sc.DEPLOYMENT, sc.STAGE],
        )
        self.cancels_refused: Counter = metrics.counter(
            sc.CANCELS_REFUSED,
            "Messages on llm.v1.cancel that cancelled nothing, by reason: no_request_id, "
            "invalid_header (malformed, or spelled in another case) or no_proof.",
            [sc.REASON],
        )
        self._metrics = metrics
        self._model = Bounded(500)
        self._dep = Bounded(1000)
        self._error = Bounded(64)
        self._cache: dict[tuple[str, str, str, str], CallLabels] = {}
        self._routed: set[str] = set()  # deployments whose series exist (routed)

    def watch(self, keys: SecretCache, usage: UsageBatcher, items: ResponseItems) -> None:
        """Export the secret cache's, the usage batcher's and the response items' own counts
        at scrape time."""
        self._metrics.counter_callback(
            sc.SECRET_CACHE,
            "Provider key lookups by result (hit: served from memory, miss: fetched, error).",
            [sc.RESULT],
            lambda: [(("hit",), keys.hits), (("miss",), keys.misses), (("error",), keys.errors)],
        )
        self._metrics.counter_callback(
            sc.USAGE_EVENTS,
            "Usage events by result: published (stored in USAGE) or dropped (never stored).",
            [sc.RESULT],
            lambda: [(("published",), usage.published), (("dropped",), usage.dropped)],
        )
        self._metrics.counter_callback(
            sc.RESPONSE_ITEMS,
            "Output items of translated Responses answers kept for later item references, by "
            "result: stored, or failed (not stored: a later reference to them gets a 404).",
            [sc.RESULT],
            lambda: [(("stored",), items.stored), (("failed",), items.failed)],
        )

    def labels(self, op: str, kind: str, model: str, deployment: str) -> CallLabels:
        key = (op, kind, model, deployment)
        found = self._cache.get(key)
        if found is None:
            provider = sc.PROVIDERS.get(kind, kind)
            found = CallLabels(self, op, provider, self._model(model), self._dep(deployment))
            self._cache[key] = found
        return found

    def routed(self, deployments: Mapping[str, tuple[Provider, Deployment]]) -> None:
        """Create at zero what ``rate()`` and ``increase()`` read of each routed deployment,
        when the process loads or changes its route table.

        Prometheus (before its created-timestamp handling) takes a series' first scraped
        value as its start: a deployment whose first series appeared with 10 calls in them
        counted 0 calls and 0 tokens in its recording rules. So its successful chat calls'
        duration (the calls per second), its billed tokens (input, output) and its failures by
        class exist at 0 before its first call: 54 + 12 series per deployment, none beyond
        what its first chat call and first failures would create. An operation other than
        chat (embeddings, text_completion...) or a failure's own duration series still
        appears on first use: a deployment says what it serves nowhere before then."""
        op = sc.OPERATIONS["chat"]
        for dep_id, (provider, deployment) in deployments.items():
            if dep_id in self._routed:
                continue
            self._routed.add(dep_id)
            dep = self._dep(dep_id)
            provider_name = sc.PROVIDERS.get(provider.kind, provider.kind)
            labels = (op, provider_name, self._model(deployment.model), dep)
            self.duration.labels(*labels, "")
            self.tokens.labels(*labels, "input")
            self.tokens.labels(*labels, "output")
            for code in FAILURE_CLASSES:
                self.errors.labels(dep, code)

    def left(self, deployment: str, *, queued: bool) -> None:
        """A request whose caller left was dropped (``queued``) or stopped while served."""
        self.cancelled.labels(self._dep(deployment), "queued" if queued else "serving").inc()

    def cancel_refused(self, reason: str) -> None:
        """A message on ``llm.v1.cancel`` cancelled nothing (``reason``: a few fixed words)."""
        self.cancels_refused.labels(reason).inc()

    def paused(self, deployment: str, paused: bool) -> None:
        """This process stopped pulling ``deployment`` for want of its key, or pulls it again
        (set to 0, not removed: the series stays between scrapes, as the cooldown gauges do)."""
        self.key_paused.labels(self._dep(deployment)).set(1 if paused else 0)

    def finished(
        self,
        labels: CallLabels,
        *,
        op: str,
        kind: str,
        model: str,
        deployment: str,
        seconds: float,
        ttfc: float | None,
        error: ApiError | None,
        failed: bool,
    ) -> None:
        """One provider call ended (``error`` None when it succeeded). Every failure is timed
        under its class; only the deployment's own (``failed``, by
        :func:`.traffic.deployment_failed`) is a provider error. Its tokens are counted where it
        is billed (:meth:`CallLabels.billed`)."""
        if error is None:
            labels.duration.observe(seconds)
        else:
            code = self._error(error_class(error))
            self._duration(op, kind, model, deployment, code).observe(seconds)
            if failed:
                self.errors.labels(self._dep(deployment), code).inc()
        if ttfc is not None:
            labels.ttfc.observe(ttfc)

    def stopped(self, *, op: str, kind: str, model: str, deployment: str, seconds: float) -> None:
        """A provider call stopped because its caller left: a cancel (``serving``), timed
        under ``error_type`` ``sc.CALLER_LEFT``, and no provider error."""
        self.left(deployment, queued=False)
        self._duration(op, kind, model, deployment, self._error(sc.CALLER_LEFT)).observe(seconds)

    def _duration(self, op: str, kind: str, model: str, dep: str, error: str) -> Histogram:
        """The duration histogram's child for a call that did not succeed (off the hot path)."""
        provider = sc.PROVIDERS.get(kind, kind)
        op_name = sc.OPERATIONS.get(op, sc.OTHER)
        return self.duration.labels(op_name, provider, self._model(model), self._dep(dep), error)
