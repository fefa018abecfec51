"""What an edge exports: HTTP requests by route and status, refusals by reason, and what it
serves its own clients in GenAI server terms (request duration, time to first token, time per
output token). Edges also count answered requests by status class for their heartbeat.

A request's outcome is what the client got, which for a stream is not always the status it
was sent: a stream that fails after it started (its last event the error) counts with the
error's class and status class, as the same failure of a whole answer would; a client that
left before its answer ended, whole or streamed, counts with ``error_type`` ``sc.CALLER_LEFT``
(``cancelled``, the model-proxies' class of a call its caller left) in the status class of
:data:`~.departure.CLIENT_CLOSED` (499). Only the HTTP counter keeps the status actually sent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram

from switchyard.client import LLMClient
from switchyard.errors import ApiError, RateLimited
from switchyard.ingress.departure import CLIENT_CLOSED
from switchyard.runtime import semconv as sc
from switchyard.runtime.error_labels import error_class
from switchyard.runtime.metrics import Bounded, Metrics
from switchyard.schemas.openai import Usage

# Refusal reasons (the label of switchyard_refusals_total) of the client errors (4xx) the edge
# answers itself or relays from a head, by status; every other 4xx is ``invalid``. Codes
# that say more than their status come first (_BY_CODE), and a key's limit (rpm, tpm,
# parallel, budget) names itself. docs/operations.md lists them.
_BY_STATUS = {401: "auth", 403: "model", 404: "model", 413: "too_large", 429: "capacity"}
_BY_CODE = {
    "too_many_failed_authentications": "auth",  # 429 for an address sending unknown keys
    "too_many_concurrent_requests": "parallel",
    "budget_exceeded": "budget",
    "tenant_queue_full": "capacity",  # the head's 429s: no room now, not the key's limits
    "deployments_rate_limited": "capacity",
    "previous_response_not_found": "invalid",  # a 404 about the request, not its model
}
# The head's 429 once every deployment it tried answered 429 (the reply names the last one):
# the providers' quotas, apart from ``capacity`` (refused before any deployment took it; the
# same code before any attempt, every deployment cooling down after 429s, stays there).
PROVIDERS_LIMITED = "provider_rate_limited"
_TRIED = {"deployments_rate_limited": PROVIDERS_LIMITED}
INVALID = "invalid"
# Every reason above, created at 0 when the edge starts (see EdgeMetrics.zeroed).
REASONS = (
    "auth",
    "model",
    "rpm",
    "tpm",
    "parallel",
    "budget",
    "capacity",
    PROVIDERS_LIMITED,
    "too_large",
    INVALID,
)
# The error classes of an alias's requests created at 0 once the alias is known to be real (a
# request of it was served): the edge's own refusals for a key's limits and its Redis/Valkey
# outage, which the 429 share and SwitchyardLimitsUnavailable read with rate()/increase().
ZEROED_CLASSES = (
    "rate_limit_exceeded",
    "too_many_concurrent_requests",
    "budget_exceeded",
    "limits_unavailable",
)
# The most model labels known() drops at once (each ~10 series: ~25 ms for 50).
DROPS_AT_ONCE = 50
# How long a model label is absent from every telling of the route table before known() drops
# it: each telling is one head's list, and heads may hold different revisions for a while.
ABSENT_S = 30.0
# The most of one interval between two tellings that counts toward ABSENT_S (the watch asks
# every 2 s, an ask waiting up to 2 s): a longer gap (no head answering, heads older than
# this edge) is time without a newer list, which keeps the last one, not time absent.
TOLD_GAP_S = 6.0
# HTTP's standard methods (RFC 9110 and PATCH); any other is counted as ``_OTHER``.
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# Statuses a request can get before any worker saw its model: the model label is not trusted.
_UNROUTED = frozenset({400, 401, 403, 404, 413})


def status_class(status: int) -> str:
    if status == 429:
        return "429"
    return f"{status // 100}xx"


def refusal_reason(error: ApiError, status: int, *, served: bool = False) -> str | None:
    """The refusal reason of ``error`` answered with ``status``, or None when it is no
    refusal: a 5xx, or an error of a deployment (a provider's 4xx passed on, a model-proxy's
    own, anything after a stream started: ``served``), except the head's codes above; the
    head's 429 after deployments were tried and all answered 429 is ``provider_rate_limited``."""
    if isinstance(error, RateLimited) and error.limit:
        return error.limit
    if served and error.code in _TRIED:
        return _TRIED[error.code]
    reason = _BY_CODE.get(error.code or "")
    if reason is not None:
        return reason
    if served or not 400 <= status < 500:
        return None
    return _BY_STATUS.get(status, INVALID)


class EdgeMetrics:
    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._http: Counter = metrics.counter(
            sc.HTTP_REQUESTS,
            "HTTP requests by route, method and status.",
            [sc.ROUTE, sc.METHOD, sc.STATUS],
        )
        self._refusals: Counter = metrics.counter(
            sc.REFUSALS,
            "LLM requests answered with a client error (4xx) before any deployment took them, "
            "by reason (auth, model, rpm, tpm, parallel, budget, capacity, too_large, invalid); "
            "and provider_rate_limited: every deployment tried answered 429.",
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
        self._client: LLMClient | None = None
        metrics.gauge_callback(
            sc.EDGE_UNREAD_BYTES,
            "Reply bytes the edge holds received and not yet written to their clients "
            "(each message counted with a fixed overhead).",
            [],
            lambda: self._of_client(lambda c: c.unread_bytes),
        )
        metrics.counter_callback(
            sc.EDGE_SLOW_READERS,
            "Streams ended with reader_too_slow: their client fell more than "
            "ingress.max_unread_bytes behind.",
            [],
            lambda: self._of_client(lambda c: c.overflows),
        )
        self._model = Bounded(500)
        self._error = Bounded(64)
        self._zeroed: set[tuple[str, str]] = set()  # (operation, alias) created at 0
        # Each model label's duration series, (operation, error type): what _drop removes.
        self._series: dict[str, set[tuple[str, str]]] = {}
        # Model labels absent from the route table at the last telling, with when (on the
        # told clock) the first telling in a row without them came: absent ABSENT_S, they go
        # (see known()). The told clock runs only while tellings come: each interval between
        # two counts at most TOLD_GAP_S.
        self._absent: dict[str, float] = {}
        self._told = 0.0
        self._told_at: float | None = None  # (self._clock) the last telling
        self._clock = clock
        for reason in REASONS:
            self._refusals.labels(reason)
        self._requests: dict[tuple[str, int], Counter] = {}
        self.by_class: dict[str, int] = {"2xx": 0, "4xx": 0, "429": 0, "5xx": 0}

    def watch(self, client: LLMClient) -> None:
        """Export ``client``'s reply backlog (the edge's, once it is connected)."""
        self._client = client

    def _of_client(
        self, read: Callable[[LLMClient], int]
    ) -> Iterable[tuple[tuple[str, ...], float]]:
        client = self._client
        return [((), float(read(client)) if client is not None else 0.0)]

    def _zero(self, operation: str, alias: str) -> None:
        """Create an alias's refusal classes (:data:`ZEROED_CLASSES`) at 0 the first time a
        request of it is served (the alias is real: a client's made-up model name never is).

        Prometheus (before its created-timestamp handling) takes a series' first scraped
        value as its start: the first budget refusals of an alias counted 0 in the 429 share
        (0.044 for a real 20%). An edge holds no route table: it learns the table's aliases
        from a head (:meth:`known`; see docs/operations.md, "Series that start at 0")."""
        if (operation, alias) in self._zeroed:
            return
        self._zeroed.add((operation, alias))
        for error_type in ("", *ZEROED_CLASSES):
            error_label = self._error(error_type) if error_type else ""
            self._duration.labels(operation, alias, error_label)
            self._series.setdefault(alias, set()).add((operation, error_label))

    def known(self, aliases: Iterable[str]) -> None:
        """The route table's aliases (:mod:`.alias_watch`): their chat series are created at
        0 before their first request, which then counts in rate() and increase() like any
        later one. Other operations (embeddings, text completions) an alias serves still have
        their series made by its first request of them, on each edge.

        A model label absent from every telling for :data:`ABSENT_S` (an alias that left the
        table, requested or not; a name a deployment served that the table does not hold)
        gives its place among the 500 labels back, and its series go (Prometheus marks them
        stale): every alias a table ever held, once requested, kept one, so after enough
        renames a new alias's requests counted as ``_OTHER``. A time, not a count of tellings:
        each telling is one head's list, and while heads hold different revisions of the table
        an alias only the newer ones hold was missing from two answers in a row one time in
        four, its series dropped and made again. Time while tellings come: a gap between two
        (no head answered, heads older than this edge) counts at most :data:`TOLD_GAP_S`, so
        the last list the edge had stands until newer ones replace it; on wall time, an alias
        missing from one old head's answer before a gap and from one after it lost its place
        (and its refusals counted as ``_OTHER`` until a request of it was served). At most
        :data:`DROPS_AT_ONCE` labels go at a telling (the rest at the next ones): removing
        series takes prometheus_client ~50 us each, and a whole table replaced at once held
        the event loop for a quarter of a second."""
        chat = sc.OPERATIONS["chat"]
        now = self._clock()
        if self._told_at is not None:
            self._told += min(max(0.0, now - self._told_at), TOLD_GAP_S)
        self._told_at = now
        told = self._told
        current = set(aliases)
        absent = self._model.values() - current - {sc.OTHER}
        since = {alias: self._absent.get(alias, told) for alias in absent}
        due = [alias for alias, first in since.items() if told - first >= ABSENT_S]
        for alias in due[:DROPS_AT_ONCE]:
            self._drop(alias)
            del since[alias]
        self._absent = since
        for alias in current:
            label = self._model(alias)
            if label != sc.OTHER and (chat, label) not in self._zeroed:
                self._zero(chat, label)

    def _drop(self, alias: str) -> None:
        """Remove every series of the model label ``alias`` and free its place."""
        series = self._series.pop(alias, set())
        for operation in {operation for operation, _ in series}:
            self._zeroed.discard((operation, alias))
            for metric in (self._ttft, self._tpot):  # (only ever with a duration series)
                with contextlib.suppress(KeyError):
                    metric.remove(operation, alias)
        for operation, error_type in series:
            with contextlib.suppress(KeyError):
                self._duration.remove(operation, alias, error_type)
        self._model.forget(alias)

    def http(self, route: str, method: str, status: int) -> None:
        """A request to a non-LLM route (models, health, admin API...). A method outside
        HTTP's standard set is ``_OTHER`` (the semconv rule): the parser takes any token as a
        method, and each new one would be a new series."""
        known = method if method in HTTP_METHODS else sc.OTHER
        self._http.labels(route, known, str(status)).inc()

    def llm(
        self,
        route: str,
        op: str,
        model: str,
        *,
        status: int,
        seconds: float,
        error: ApiError | None = None,
        left: bool = False,
        served: bool = False,
        ttft: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        """One LLM request ended. ``status``: the HTTP status sent (a stream keeps its 200);
        ``error``: its failure, also one that ended a stream; ``left``: the client left
        before its answer ended; ``served``: a deployment took it (see :func:`refusal_reason`).
        ``ttft``: when the first content went out, if it did (observed whatever came next)."""
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self._http.labels(
                route, "POST", str(status)
            )
        counter.inc()
        outcome = status
        if error is not None:
            if status < 400:  # a stream that failed after it started
                outcome = error.status
            reason = refusal_reason(error, outcome, served=served)
            if reason is not None:
                self._refusals.labels(reason).inc()
            error_type = self._error(error_class(error, outcome))
        elif left:
            outcome = CLIENT_CLOSED
            error_type = sc.CALLER_LEFT
        else:
            error_type = ""
        kind = status_class(outcome)
        self.by_class[kind] = self.by_class.get(kind, 0) + 1
        operation = sc.OPERATIONS.get(op, sc.OTHER)
        # A deployment took it (a provider's own 4xx passed on too): the model is an alias,
        # and may take a label place. Any other name (refused at the edge: 429, 503, 408, the
        # client left) is one only if it holds a place already (the route table's aliases
        # hold one from known()): a client's made-up names took places, and as places were
        # freed new ones took them again, without end.
        real = served or (error is None and status < 400 and not left)
        if real:
            label = self._model(model)
        else:
            label = sc.OTHER if status in _UNROUTED else self._model.held(model)
        if real and label != sc.OTHER:
            self._zero(operation, label)
        self._duration.labels(operation, label, error_type).observe(seconds)
        if label != sc.OTHER:
            self._series.setdefault(label, set()).add((operation, error_type))
        if ttft is not None:  # the first token did go out, whatever happened after it
            self._ttft.labels(operation, label).observe(ttft)
            if not error_type and usage is not None and usage.completion_tokens > 1:
                per_token = (seconds - ttft) / (usage.completion_tokens - 1)
                self._tpot.labels(operation, label).observe(max(0.0, per_token))
