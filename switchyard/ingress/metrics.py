"""What an edge exports: HTTP requests by route and status, refusals by reason, and what it
serves its own clients in GenAI server terms (request duration, time to first token, time per
output token). Edges also count answered requests by status class for their heartbeat."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from switchyard.errors import ApiError, RateLimited
from switchyard.runtime import semconv as sc
from switchyard.runtime.error_labels import error_class
from switchyard.runtime.metrics import Bounded, Metrics
from switchyard.schemas.openai import Usage

# Refusal reasons by error code (the label of switchyard_refusals_total).
_REASONS = {
    "missing_api_key": "auth",
    "invalid_api_key": "auth",
    "api_key_revoked": "auth",
    "api_key_expired": "auth",
    "model_not_allowed": "model",
    "budget_exceeded": "budget",
    "too_many_concurrent_requests": "parallel",
    "request_too_large": "too_large",
    "invalid_header": "invalid",
    "invalid_json": "invalid",
    "invalid_request": "invalid",
}
# Statuses a request can get before any worker saw its model: the model label is not trusted.
_UNROUTED = frozenset({400, 401, 403, 404, 413})


def status_class(status: int) -> str:
    if status == 429:
        return "429"
    return f"{status // 100}xx"


class EdgeMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self._http: Counter = metrics.counter(
            sc.HTTP_REQUESTS,
            "HTTP requests by route, method and status.",
            [sc.ROUTE, sc.METHOD, sc.STATUS],
        )
        self._refusals: Counter = metrics.counter(
            sc.REFUSALS,
            "Requests refused at the edge, by reason (auth, model, rpm, tpm, parallel, budget, "
            "too_large, invalid).",
            [sc.REASON],
        )
        genai = (sc.OPERATION, sc.REQUEST_MODEL)
        self._duration: Histogram = metrics.histogram(
            sc.SERVER_REQUEST_DURATION,
            "Time to answer a client's LLM request (GenAI server request duration).",
            [*genai, sc.ERROR_TYPE],
            sc.DURATION_BUCKETS,
        )
        self._ttft: Histogram = metrics.histogram(
            sc.SERVER_TIME_TO_FIRST_TOKEN,
            "Time from a streaming request's arrival to its first content chunk.",
            genai,
            sc.TTFT_BUCKETS,
        )
        self._tpot: Histogram = metrics.histogram(
            sc.SERVER_TIME_PER_OUTPUT_TOKEN,
            "Time per output token after the first, for successful streamed answers.",
            genai,
            sc.PER_TOKEN_BUCKETS,
        )
        self._model = Bounded(500)
        self._error = Bounded(64)
        self._requests: dict[tuple[str, int], Counter] = {}
        self.by_class: dict[str, int] = {"2xx": 0, "4xx": 0, "429": 0, "5xx": 0}

    def http(self, route: str, method: str, status: int) -> None:
        """A request to a non-LLM route (models, health, admin API...)."""
        self._http.labels(route, method, str(status)).inc()

    def llm(
        self,
        route: str,
        op: str,
        model: str,
        *,
        status: int,
        seconds: float,
        error: ApiError | None = None,
        ttft: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        """One LLM request answered (``error`` set when it failed)."""
        self.by_class[status_class(status)] = self.by_class.get(status_class(status), 0) + 1
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self._http.labels(
                route, "POST", str(status)
            )
        counter.inc()
        operation = sc.OPERATIONS.get(op, sc.OTHER)
        if error is not None:
            reason = _REASONS.get(error.code or "")
            if isinstance(error, RateLimited) and error.limit:
                reason = error.limit
            if reason is not None:
                self._refusals.labels(reason).inc()
        label = sc.OTHER if status in _UNROUTED else self._model(model)
        error_type = "" if error is None else self._error(error_class(error, status))
        self._duration.labels(operation, label, error_type).observe(seconds)
        if ttft is not None and error is None:
            self._ttft.labels(operation, label).observe(ttft)
            if usage is not None and usage.completion_tokens > 1:
                per_token = (seconds - ttft) / (usage.completion_tokens - 1)
                self._tpot.labels(operation, label).observe(max(0.0, per_token))
