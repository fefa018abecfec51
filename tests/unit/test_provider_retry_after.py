"""A provider's ``Retry-After``: delay-seconds or an HTTP-date (RFC 9110), and nothing else.

An explorer saw a 429 with ``Retry-After: Fri, 04 Dec 2026 23:42:08 GMT`` ignored (the client
was told 5 s, the deployment cooled 5 s), and one with ``Retry-After: -5`` answered without a
``Retry-After`` at all: it read as 0, "retry at once", so nothing cooled and nothing was left
to wait for. Pure logic: the parser, the OpenAI-compatible adapter's error translation, the
head's cap on what a client is told, and the bus's own header, which keeps its meaning.
"""

from __future__ import annotations

import datetime
import email.utils

import pytest

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope
from switchyard.errors import ProviderRateLimited
from switchyard.schemas.health import MAX_COOLDOWN_S
from switchyard.workers.head.decide import exhausted
from switchyard.workers.modelproxy.providers.openai_compat import http_error
from switchyard.workers.modelproxy.providers.upstream_errors import parse_retry_after

NOW = datetime.datetime(2026, 12, 4, 23, 41, 38, tzinfo=datetime.UTC).timestamp()
RATE_LIMITED = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": null}}'


def _date_in(seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return email.utils.format_datetime(when, usegmt=True)


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 04 Dec 2026 23:42:08 GMT",  # RFC 9110's preferred IMF-fixdate
        "Friday, 04-Dec-26 23:42:08 GMT",  # the obsolete RFC 850 form
        "Fri Dec  4 23:42:08 2026",  # asctime's, which has no zone: GMT
        " Fri, 04 Dec 2026 23:42:08 GMT ",
    ],
)
def test_an_http_date_is_the_time_until_it(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 30.0


def test_a_date_already_past_means_retry_now() -> None:
    """As ``Retry-After: 0`` does: the wait the provider asked for is over."""
    assert parse_retry_after("Fri, 04 Dec 2026 23:41:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=NOW) == 0.0


@pytest.mark.parametrize(("value", "seconds"), [("5", 5.0), ("0", 0.0), ("1.5", 1.5), ("-0", 0.0)])
def test_delay_seconds_are_read_as_before(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "-5",
        "-0.5",
        "soon",
        "nan",
        "inf",
        "5s",
        "Fri, 99 Dec 2026 23:42:08 GMT",
        "Fri, 04 Dec 99999 23:42:08 GMT",
        "Fri, 04 Dec 2026 23:42:08 +9999",
    ],
)
def test_a_negative_or_unreadable_value_is_no_value(value: str | None) -> None:
    """Absent, so the route's cooldown and its ``Retry-After`` apply (a negative one read as
    0 used to: no cooldown, and a 429 with no ``Retry-After`` for the client)."""
    assert parse_retry_after(value, now=NOW) is None


def test_a_provider_429_with_a_date_asks_for_the_time_until_it() -> None:
    failure = http_error(429, RATE_LIMITED, {"Retry-After": _date_in(90)}, "openai", None)
    assert isinstance(failure, ProviderRateLimited)
    assert failure.retry_after is not None
    assert 85 <= failure.retry_after <= 90  # HTTP-dates are whole seconds; the test takes time


def test_a_provider_429_with_a_negative_wait_asks_for_none() -> None:
    failure = http_error(429, RATE_LIMITED, {"Retry-After": "-5"}, "openai", None)
    assert isinstance(failure, ProviderRateLimited)
    assert failure.retry_after is None


def test_a_date_far_off_is_capped_like_any_wait() -> None:
    """A provider's day is told to the client as the longest cooldown (300 s), after which
    the deployment is tried again anyway."""
    asked = parse_retry_after(_date_in(86400))
    assert asked is not None
    assert asked > MAX_COOLDOWN_S
    env = Envelope(request_id="r", tried=("d1",), last_status=429, retry_after=asked)
    assert exhausted(env).retry_after == MAX_COOLDOWN_S


def test_the_bus_header_keeps_its_meaning() -> None:
    """``Sy-Retry-After`` carries seconds only, fractions too, and 0 (no cooldown) is a value."""
    assert h.parse_retry_after("0.3") == 0.3
    assert h.parse_retry_after("0") == 0.0
    assert h.parse_retry_after("Fri, 04 Dec 2026 23:42:08 GMT") is None
