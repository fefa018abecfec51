"""What the edge's request metrics count at a request's end: the outcome a client got (a
stream that failed after it started, a client that left), and the refusal reason of every
client error the edge answers before a deployment took the request.

Pure logic: :class:`EdgeMetrics` on a registry of its own, read back as Prometheus would, and
:func:`sse_frames` handing the error that ended a stream to the request's :class:`FinalReply`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.errors import (
    ApiError,
    AuthenticationFailed,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.ingress.edge import FinalReply, sse_frames
from switchyard.ingress.metrics import (
    ABSENT_S,
    DROPS_AT_ONCE,
    TOLD_GAP_S,
    EdgeMetrics,
    refusal_reason,
)
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.openai import Usage, error_body

pytestmark = pytest.mark.unit

DURATION = f"{sc.SERVER_REQUEST_DURATION}_count"
TTFT = f"{sc.SERVER_TIME_TO_FIRST_TOKEN}_count"
TPOT = f"{sc.SERVER_TIME_PER_OUTPUT_TOKEN}_count"
ROUTE = "/v1/chat/completions"


def _edge() -> tuple[EdgeMetrics, Metrics]:
    metrics = Metrics("tail")
    return EdgeMetrics(metrics), metrics


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidRequest("messages: Field required", code="missing_required_parameter"), "invalid"),
        (InvalidRequest("bad value", code="invalid_value"), "invalid"),
        (InvalidRequest("bad json", code="invalid_json"), "invalid"),
        (ApiError("gzip", status=415, code="unsupported_content_encoding"), "invalid"),
        (ApiError("odd", status=422), "invalid"),
        (AuthenticationFailed("no key", code="missing_api_key"), "auth"),
        (RateLimited("bad keys", code="too_many_failed_authentications"), "auth"),
        (PermissionDenied("not this model"), "model"),
        (ModelNotFound("no such model"), "model"),
        (NotFound("no such response", code="previous_response_not_found"), "invalid"),
        (PayloadTooLarge("too big"), "too_large"),
        (RateLimited("rpm", limit="rpm"), "rpm"),
        (RateLimited("tpm", limit="tpm"), "tpm"),
        (RateLimited("slots", code="too_many_concurrent_requests", limit="parallel"), "parallel"),
        (RateLimited("spent", code="budget_exceeded"), "budget"),  # relayed: no limit left
        (RateLimited("full", code="tenant_queue_full"), "capacity"),
        (RateLimited("all limited", code="deployments_rate_limited"), "capacity"),
        (ServiceUnavailable("queue full", code="queue_full"), None),
        (DeadlineExceeded("late"), None),
        (ProviderError("broke", provider="d"), None),
    ],
)
def test_every_client_error_the_edge_answers_has_a_reason(
    error: ApiError, reason: str | None
) -> None:
    assert refusal_reason(error, error.status) == reason


def test_a_deployment_s_own_client_errors_are_no_refusals() -> None:
    """A provider's 400 passed on, a 429 after every retry: the deployment answered."""
    assert refusal_reason(InvalidRequest("context too long"), 400, served=True) is None
    assert refusal_reason(RateLimited("provider 429"), 429, served=True) is None
    # The head's own 429s name the deployment whose queue was full: still refusals.
    full = RateLimited("full", code="tenant_queue_full")
    assert refusal_reason(full, 429, served=True) == "capacity"


def test_a_429_after_every_deployment_answered_429_is_not_capacity() -> None:
    """An SRE's repro: the head's 429 after the providers rate limited every deployment it
    tried counted as ``capacity``, which the docs define as refused before any deployment
    took the request. It has its own reason; the same code before any attempt (every
    deployment cooling down after 429s: the reply names none) stays ``capacity``."""
    limited = RateLimited("all limited", code="deployments_rate_limited")
    assert refusal_reason(limited, 429, served=True) == "provider_rate_limited"
    assert refusal_reason(limited, 429, served=False) == "capacity"
    stats, metrics = _edge()
    stats.llm(ROUTE, "chat", "m", status=429, seconds=0.1, error=limited, served=True)
    refused = sc.REFUSALS
    assert _value(metrics, refused, reason="provider_rate_limited") == 1.0
    assert _value(metrics, refused, reason="capacity") == 0.0


def test_a_stream_that_failed_after_it_started_counts_as_failed() -> None:
    stats, metrics = _edge()
    failed = ProviderError("upstream broke mid-answer", provider="d1")
    usage = Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8)
    stats.llm(ROUTE, "chat", "m", status=200, seconds=1.0, error=failed, served=True, ttft=0.2)
    stats.llm(ROUTE, "chat", "m", status=200, seconds=1.0, ttft=0.2, usage=usage)
    assert _value(metrics, DURATION, error_type="provider_error") == 1
    assert _value(metrics, DURATION, error_type="") == 1
    assert _value(metrics, TTFT) == 2  # its first token did go out
    assert _value(metrics, TPOT) == 1  # the healthy one only
    assert _value(metrics, sc.HTTP_REQUESTS, status="200") == 2  # the status sent
    assert stats.by_class == {"2xx": 1, "4xx": 0, "429": 0, "5xx": 1}  # the heartbeat's
    assert _value(metrics, sc.REFUSALS) == 0


def test_a_client_that_left_counts_as_cancelled_streamed_or_not() -> None:
    stats, metrics = _edge()
    stats.llm(ROUTE, "chat", "m", status=200, seconds=0.3, left=True, ttft=0.1)
    stats.llm(ROUTE, "chat", "m", status=499, seconds=0.3, left=True)
    assert _value(metrics, DURATION, error_type="cancelled") == 2
    assert _value(metrics, DURATION, error_type="") == 0
    assert _value(metrics, TTFT) == 1
    assert _value(metrics, TPOT) == 0
    assert stats.by_class["4xx"] == 2  # as the 499 of a client that left a whole answer
    assert _value(metrics, sc.REFUSALS) == 0


def test_refusals_are_counted_once_by_reason() -> None:
    stats, metrics = _edge()
    missing = InvalidRequest("messages: Field required", code="missing_required_parameter")
    stats.llm(ROUTE, "chat", "m", status=400, seconds=0.01, error=missing)
    stats.llm(ROUTE, "chat", "x", status=404, seconds=0.01, error=ModelNotFound("no such"))
    provider_400 = InvalidRequest("context too long", code="context_length_exceeded")
    stats.llm(ROUTE, "chat", "m", status=400, seconds=0.5, error=provider_400, served=True)
    assert _value(metrics, sc.REFUSALS, reason="invalid") == 1
    assert _value(metrics, sc.REFUSALS, reason="model") == 1
    assert _value(metrics, sc.REFUSALS) == 2
    assert _value(metrics, DURATION, error_type="missing_required_parameter") == 1


async def _replies(items: list[Reply | Exception]) -> AsyncGenerator[Reply, None]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


@pytest.mark.parametrize("dialect", ["chat", "responses", "messages"])
async def test_the_error_ending_a_stream_reaches_the_final_reply(dialect: str) -> None:
    broke = ProviderError("upstream broke mid-answer", provider="d1")
    chunk = Reply(ReplyKind.CHUNK, b"data: {}\n\n")
    final = FinalReply()
    rest = [Reply(ReplyKind.ERROR, error_body(broke), status=502)]
    frames = [f async for f in sse_frames(chunk, _replies(list(rest)), final, dialect)]
    assert len(frames) == 2
    assert final.failure is not None
    assert (final.failure.code, final.failure.status) == ("provider_error", 502)

    lost = ServiceUnavailable("the reply path broke", code="stream_interrupted")
    final = FinalReply()
    frames = [f async for f in sse_frames(chunk, _replies([lost]), final, dialect)]
    assert len(frames) == 2
    assert final.failure is lost


async def test_a_healthy_stream_leaves_no_failure() -> None:
    final = FinalReply()
    chunk = Reply(ReplyKind.CHUNK, b'{"a":1}')
    rest: list[Reply | Exception] = [chunk, Reply(ReplyKind.FINAL, b"")]
    frames = [f async for f in sse_frames(chunk, _replies(rest), final)]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert final.failure is None
    assert final.reply is not None


def test_a_method_outside_http_s_standard_set_is_counted_as_other() -> None:
    """The HTTP parser takes any token as a method: each would be a new series."""
    stats, metrics = _edge()
    stats.http("/v1/models", "GET", 200)
    for invented in ("BREW", "PROPFIND", "X1", "X2"):
        stats.http("/v1/models", invented, 405)
    assert _value(metrics, sc.HTTP_REQUESTS, method="GET") == 1
    assert _value(metrics, sc.HTTP_REQUESTS, method=sc.OTHER) == 4
    assert _value(metrics, sc.HTTP_REQUESTS, method="BREW") == 0


def _aliases_with_series(metrics: Metrics) -> set[str]:
    return {
        sample.labels[sc.REQUEST_MODEL]
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == DURATION
    }


class _Clock:
    """The edge's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _timed_edge() -> tuple[EdgeMetrics, Metrics, _Clock]:
    metrics, clock = Metrics("tail"), _Clock()
    return EdgeMetrics(metrics, clock=clock), metrics, clock


def _told_for(stats: EdgeMetrics, clock: _Clock, seconds: float, aliases: list[str]) -> None:
    """Tellings of ``aliases`` every 2 s (alias_watch.EVERY_S) for ``seconds``."""
    for _ in range(int(seconds // 2)):
        clock.now += 2
        stats.known(aliases)


def test_an_alias_that_left_the_table_unrequested_gives_its_label_place_back() -> None:
    """Every alias the table ever held kept one of the edge's 500 model labels (and its series
    at 0): after enough renames a new alias's requests counted as ``_OTHER``. One that left the
    table gives both back once it is absent from every telling for ``ABSENT_S``."""
    stats, metrics, clock = _timed_edge()
    stats.known(["a", "b"])
    assert _aliases_with_series(metrics) == {"a", "b"}
    stats.llm(ROUTE, "chat", "b", status=200, seconds=0.1)
    stats.known(["c"])
    _told_for(stats, clock, ABSENT_S - 2, ["c"])
    assert _aliases_with_series(metrics) == {"a", "b", "c"}  # not absent long enough: kept
    assert _value(metrics, DURATION, gen_ai_request_model="b", error_type="") == 1
    _told_for(stats, clock, 2, ["c"])
    assert _aliases_with_series(metrics) == {"c"}
    for n in range(600):  # a table renamed again and again, a new name at every telling
        clock.now += 2
        stats.known([f"renamed-{n}"])
    stats.known(["real"])
    stats.llm(ROUTE, "chat", "real", status=200, seconds=0.1)
    assert _value(metrics, DURATION, gen_ai_request_model="real", error_type="") == 1
    assert _value(metrics, DURATION, gen_ai_request_model=sc.OTHER) == 0
    assert len(_aliases_with_series(metrics)) <= ABSENT_S / 2 + 2  # the last 30 s of names
    _told_for(stats, clock, ABSENT_S, ["real"])
    assert _aliases_with_series(metrics) == {"real"}


def test_an_alias_requested_once_gives_its_label_place_back_when_it_leaves_the_table() -> None:
    """An alias that had a request kept its label (and its series) for ever once it left the
    table: 500 such aliases, and every new alias's requests counted as ``_OTHER``. Its series
    go (all of them: each operation, error class, time to first token) and its place is free;
    a new alias served before the edge hears of it keeps its count (absent only briefly)."""
    stats, metrics, clock = _timed_edge()
    old = [f"old-{n}" for n in range(500)]
    stats.known(old)
    for alias in old:
        stats.llm(ROUTE, "chat", alias, status=200, seconds=0.1, ttft=0.05)
        stats.llm(ROUTE, "embed", alias, status=429, seconds=0.1, error=RateLimited("x"))
    stats.llm(ROUTE, "chat", "new", status=200, seconds=0.1)
    assert _value(metrics, DURATION, gen_ai_request_model=sc.OTHER) == 1  # all 500 taken
    stats.known(["new"])
    _told_for(
        stats, clock, ABSENT_S, ["new"]
    )  # 50 go at a telling: the event loop is not held long
    assert len(_aliases_with_series(metrics) - {"new", sc.OTHER}) == 500 - DROPS_AT_ONCE
    stats.llm(ROUTE, "chat", "new", status=200, seconds=0.1)
    assert _value(metrics, DURATION, gen_ai_request_model="new", error_type="") == 1
    for _ in range(500 // DROPS_AT_ONCE):
        clock.now += 2
        stats.known(["new"])
    assert _aliases_with_series(metrics) == {"new", sc.OTHER}
    assert _value(metrics, TTFT, gen_ai_request_model="old-1") == 0
    stats.llm(ROUTE, "chat", "early", status=200, seconds=0.1)  # before the edge hears of it
    stats.known(["new"])
    clock.now += 2
    stats.known(["new", "early"])
    stats.known(["new", "early"])
    assert _value(metrics, DURATION, gen_ai_request_model="early", error_type="") == 1
    assert _aliases_with_series(metrics) == {"new", "early", sc.OTHER}


def test_an_alias_only_some_heads_hold_keeps_its_series_whatever_head_answers() -> None:
    """Each telling is one head's list: while heads hold different revisions of the table, an
    alias only the newer ones hold is missing from some answers. Missing from two in a row (one
    time in four with half the heads behind), it lost its series, made again at the next
    telling that had it: counts gone and series reborn. It goes only when absent from every
    telling for ``ABSENT_S``."""
    stats, metrics, clock = _timed_edge()
    newer, older = ["a", "added"], ["a"]
    stats.known(newer)
    stats.llm(ROUTE, "chat", "added", status=200, seconds=0.1)
    for told in [older, older, newer, older, older, older, newer] * 4:
        clock.now += 2  # alias_watch.EVERY_S
        stats.known(told)
        assert _value(metrics, DURATION, gen_ai_request_model="added", error_type="") == 1
    for _ in range(int(ABSENT_S // 2) + 1):  # every head dropped it since
        clock.now += 2
        stats.known(older)
    assert _aliases_with_series(metrics) == {"a"}


def test_a_gap_in_tellings_keeps_the_last_list_the_edge_had() -> None:
    """The 30 s of absence were wall time: an alias missing from one old head's answer, then no
    answer for a while (heads down, restarting, or older than this edge), then one more old
    head's answer: its place and series went though no newer list had dropped it, and its
    refusals at the edge counted as ``_OTHER``. Time between tellings counts only up to
    ``TOLD_GAP_S`` a gap: the last list stands until newer ones replace it for ``ABSENT_S``."""
    stats, metrics, clock = _timed_edge()
    newer, older = ["a", "added"], ["a"]
    stats.known(newer)
    stats.llm(ROUTE, "chat", "added", status=200, seconds=0.1)
    clock.now += 2
    stats.known(older)  # a head still on the older table answered
    clock.now += 120  # then none for two minutes
    stats.known(older)
    assert _aliases_with_series(metrics) == {"a", "added"}
    stats.llm(ROUTE, "chat", "added", status=429, seconds=0.1, error=RateLimited("x"))
    assert _value(metrics, DURATION, gen_ai_request_model="added") == 2  # its own label
    assert _value(metrics, DURATION, gen_ai_request_model=sc.OTHER) == 0
    _told_for(stats, clock, ABSENT_S - 2 - TOLD_GAP_S, older)  # not yet 30 s of tellings
    assert _aliases_with_series(metrics) == {"a", "added"}
    _told_for(stats, clock, 2, older)  # absent from every telling for 30 s: it goes
    assert _aliases_with_series(metrics) == {"a"}


def test_a_clients_made_up_model_names_take_no_label_place() -> None:
    """A refusal decided at the edge (a key's limit, no head, the deadline, a client that left)
    gave the client's ``model`` string a label; names left from the table gave their places
    back, and new junk took them again: thousands of series families in minutes. A name takes
    a place only when a deployment served it or the route table holds it (known())."""
    stats, metrics = _edge()
    stats.known(["real"])
    for n in range(2000):
        junk = f"junk-{n}"
        stats.llm(ROUTE, "chat", junk, status=429, seconds=0.1, error=RateLimited("x"))
        stats.llm(ROUTE, "chat", junk, status=503, seconds=0.1, error=ServiceUnavailable("x"))
        stats.llm(ROUTE, "chat", junk, status=408, seconds=0.1, error=DeadlineExceeded("x"))
        stats.llm(ROUTE, "chat", junk, status=200, seconds=0.1, left=True)
        if n % 100 == 0:
            stats.known(["real"])
    assert _aliases_with_series(metrics) == {"real", sc.OTHER}
    assert _value(metrics, DURATION, gen_ai_request_model=sc.OTHER) == 8000
    # The table's alias is refused under its own name; one a deployment served takes a place.
    stats.llm(ROUTE, "chat", "real", status=429, seconds=0.1, error=RateLimited("x"))
    stats.llm(ROUTE, "chat", "early", status=200, seconds=0.1)  # before the edge hears of it
    stats.llm(ROUTE, "chat", "early", status=429, seconds=0.1, error=RateLimited("x"))
    assert _value(metrics, DURATION, gen_ai_request_model="real", error_type="") == 0
    assert _value(metrics, DURATION, gen_ai_request_model="real") == 1
    assert _value(metrics, DURATION, gen_ai_request_model="early") == 2
