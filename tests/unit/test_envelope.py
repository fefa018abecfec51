"""The request envelope: every header decoded once, valid, missing, malformed and oversized."""

from __future__ import annotations

import time

import pytest

from switchyard.bus import headers as h
from switchyard.bus.envelope import (
    CLOCK_SKEW_S,
    MAX_TRIED,
    Deadline,
    Envelope,
    MalformedHeader,
    given_up_for,
    new_request_id,
    trace_context,
)
from switchyard.errors import InvalidRequest

pytestmark = pytest.mark.unit

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

FULL = {
    h.REQUEST_ID: "req-1",
    h.ATTEMPT: "2",
    h.DEADLINE: "1999999999999",
    h.KEY_ID: "key-1",
    h.TENANT: "team-a",
    h.KEY_HASH: "a" * 64,
    h.BUDGET_PERIOD: "monthly",
    h.AUTHORIZATION: "Bearer sk-sy-x",
    h.OP: "chat",
    h.ALIAS: "gpt-4o",
    h.REPLY: "_R_.abc.def",
    h.STREAM: "1",
    h.DEPLOYMENT: "openai-gpt-4o",
    h.PIN: "openai-gpt-4o",
    h.TRIED: "d1,d2",
    h.ERRORS: "d1: 500 boom; d2: 429 slow",
    h.LAST_STATUS: "429",
    h.RETRY_AFTER: "2.5",
    h.TRACEPARENT: TRACE,
    h.TRACESTATE: "vendor=x",
    h.PRIORITY: "batch",
    h.WEIGHT: "2.5",
}


def test_every_header_is_decoded_into_its_typed_field() -> None:
    env = Envelope.decode(FULL)
    assert env.request_id == "req-1"
    assert env.attempt == 2
    assert env.deadline == Deadline(1999999999999)
    assert (env.key_id, env.tenant, env.key_hash) == ("key-1", "team-a", "a" * 64)
    assert env.budget_period == "monthly"
    assert env.authorization == "Bearer sk-sy-x"
    assert (env.op, env.alias, env.reply, env.stream) == ("chat", "gpt-4o", "_R_.abc.def", True)
    assert (env.deployment, env.pin) == ("openai-gpt-4o", "openai-gpt-4o")
    assert env.tried == ("d1", "d2")
    assert env.hop == 2
    assert env.errors == "d1: 500 boom; d2: 429 slow"
    assert (env.last_status, env.retry_after) == (429, 2.5)
    assert (env.traceparent, env.tracestate) == (TRACE, "vendor=x")
    assert (env.priority, env.weight) == ("batch", 2.5)


def test_encode_then_decode_is_the_same_envelope() -> None:
    env = Envelope.decode(FULL)
    assert Envelope.decode(env.encode()) == env
    assert env.encode() == FULL


def test_every_header_but_none_may_be_left_out() -> None:
    env = Envelope.decode({})
    assert len(env.request_id) == 22  # generated: a NUID
    assert env.attempt == 1
    assert env.deadline is None
    assert env.tried == ()
    assert env.retry_after is None
    assert not env.stream
    assert (env.priority, env.weight) == ("", 1.0)
    assert Envelope.decode(None).request_id != env.request_id
    # Defaults are not written back.
    assert set(env.encode()) == {h.REQUEST_ID, h.ATTEMPT}


def test_unknown_headers_are_ignored() -> None:
    env = Envelope.decode({"X-Something": "1", "Nats-Request-Info": "{}", h.REQUEST_ID: "r"})
    assert env.request_id == "r"
    assert "X-Something" not in env.encode()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (h.REQUEST_ID, "has space"),
        (h.REQUEST_ID, "new\nline"),
        (h.ATTEMPT, "0"),
        (h.ATTEMPT, "two"),
        (h.ATTEMPT, "-1"),
        (h.ATTEMPT, "100000"),
        (h.DEADLINE, "soon"),
        (h.DEADLINE, "1.5e12"),
        (h.DEADLINE, "-5"),
        (h.DEADLINE, "0"),
        (h.DEADLINE, "1796463163"),  # unix seconds: read as ms, a moment in January 1970
        (h.DEADLINE, "9" * 30),
        # Superscript digits: str.isdigit() says yes, int() raises ValueError (a 500 before).
        (h.DEADLINE, "\u00b2"),
        (h.ATTEMPT, "\u00b9"),
        (h.LAST_STATUS, "4\u00b2\u00b2"),
        # More digits than int() converts (4300): ValueError before the length was checked.
        (h.ATTEMPT, "9" * 5000),
        (h.LAST_STATUS, "4" * 5000),
        (h.OP, "delete"),
        (h.LAST_STATUS, "99"),
        (h.LAST_STATUS, "abc"),
        (h.TRACEPARENT, "not-a-trace"),
        (h.TRACEPARENT, TRACE.upper()),
        (h.TRIED, ",".join(f"d{i}" for i in range(MAX_TRIED + 1))),
        (h.PRIORITY, "urgent"),
        (h.PRIORITY, "Interactive"),
        (h.WEIGHT, "0"),
        (h.WEIGHT, "-1"),
        (h.WEIGHT, "heavy"),
        (h.WEIGHT, "nan"),
        (h.WEIGHT, "1001"),
    ],
)
def test_a_malformed_header_is_a_400_naming_it(header: str, value: str) -> None:
    with pytest.raises(MalformedHeader) as caught:
        Envelope.decode({h.REQUEST_ID: "r", header: value})
    assert isinstance(caught.value, InvalidRequest)
    assert caught.value.status == 400
    assert caught.value.param == header
    assert header in caught.value.message


@pytest.mark.parametrize(
    "header",
    [h.REQUEST_ID, h.KEY_ID, h.TENANT, h.ALIAS, h.REPLY, h.ERRORS, h.TRACESTATE, h.AUTHORIZATION],
)
def test_an_oversized_header_is_refused(header: str) -> None:
    with pytest.raises(MalformedHeader) as caught:
        Envelope.decode({header: "x" * 5000})
    assert caught.value.param == header
    assert "longer than" in caught.value.message


def test_a_malformed_retry_after_reads_as_absent() -> None:
    """Retry-After comes from providers too: a bad one must never fail a request."""
    for bad in ("soon", "inf", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert Envelope.decode({h.RETRY_AFTER: bad}).retry_after is None
    assert Envelope.decode({h.RETRY_AFTER: "-3"}).retry_after == 0.0


def test_with_makes_a_changed_copy_and_leaves_the_original() -> None:
    env = Envelope.decode(FULL)
    changed = env.with_(tried=(*env.tried, "d3"), attempt=3)
    assert changed.tried == ("d1", "d2", "d3")
    assert changed.attempt == 3
    assert env.tried == ("d1", "d2")
    with pytest.raises(AttributeError):
        env.attempt = 5  # type: ignore[misc]


def test_deadline_parses_formats_and_measures_one_way() -> None:
    deadline = Deadline.after(10)
    assert 9 < deadline.remaining() <= 10
    assert not deadline.passed()
    assert Deadline.parse(deadline.header()) == deadline
    assert Deadline(int((time.time() - 1) * 1000)).passed()
    assert Deadline(2_000_000_000_000).timestamp == 2_000_000_000.0
    assert Deadline(1000).remaining(now=0.5) == pytest.approx(0.5)
    env = Envelope(request_id="r")
    assert env.remaining(7.0) == 7.0
    assert env.with_(deadline=deadline).remaining(7.0) <= 10


def test_trace_context_from_http_is_kept_only_when_valid() -> None:
    assert trace_context(TRACE, "a=b") == (TRACE, "a=b")
    assert trace_context("garbage", "a=b") == ("", "")
    assert trace_context("ff" + TRACE[2:], "") == ("", "")  # version ff is invalid
    assert trace_context(TRACE, "x" * 2000)[1] == "x" * 512


def test_request_ids_are_unique() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize("priority", ["interactive", "default", "batch"])
def test_each_priority_class_round_trips(priority: str) -> None:
    env = Envelope.decode({h.REQUEST_ID: "r", h.PRIORITY: priority})
    assert env.priority == priority
    assert env.encode()[h.PRIORITY] == priority


def test_priority_and_weight_at_their_defaults_are_not_written() -> None:
    headers = Envelope(request_id="r", priority="", weight=1.0).encode()
    assert not {h.PRIORITY, h.WEIGHT} & set(headers)
    assert Envelope(request_id="r", weight=0.5).encode()[h.WEIGHT] == "0.5"


def test_an_attempt_is_given_up_only_past_its_accept_by_and_the_clock_allowance() -> None:
    now = 1_700_000_000.0
    by = {h.ACCEPT_BY: str(int(now * 1000))}
    assert given_up_for(None, now) == 0.0
    assert given_up_for({}, now) == 0.0
    assert given_up_for(by, now) == 0.0
    assert given_up_for(by, now + CLOCK_SKEW_S) == 0.0  # another host's clock may run ahead
    assert given_up_for(by, now + CLOCK_SKEW_S + 3.5) == pytest.approx(3.5)


@pytest.mark.parametrize("value", ["soon", "-5", "0", "1.5e12", "9" * 17, "1796463163"])
def test_an_unreadable_accept_by_names_its_header(value: str) -> None:
    with pytest.raises(MalformedHeader) as bad:
        given_up_for({h.ACCEPT_BY: value})
    assert bad.value.param == h.ACCEPT_BY


def test_a_deadline_is_capped_only_when_the_cap_comes_first() -> None:
    soon, far = Deadline.after(5), Deadline.after(7200)
    assert soon.capped(3600) is soon
    assert 3599 < far.capped(3600).remaining() <= 3600
