"""Accounting's per-batch and per-event shortcuts give what the long way gives.

A batch's stream place is read from its reply subject rather than nats-py's ``msg.metadata``;
an event's budget period and day are worked out once per UTC day; an event's rates once per
deployment and model. Each is checked against the long way it replaces.
"""

from __future__ import annotations

import calendar
import datetime as dt

import msgspec
import pytest
from nats.aio.msg import Msg

from switchyard.limits import periods
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import RouteTable, decode_route_table
from switchyard.workers.accounting.budget_days import KEEP, BudgetDays
from switchyard.workers.accounting.pricing import RATES_KEPT, Pricing
from switchyard.workers.accounting.stream import Place, micros, place_of

STORED_NS = 1_764_755_000_123_456_789


@pytest.mark.parametrize(
    "reply",
    [
        f"$JS.ACK.USAGE.accounting.3.1048577.1000.{STORED_NS}.12",
        f"$JS.ACK._.ACCHASH.USAGE.accounting.3.1048577.1000.{STORED_NS}.12",
        f"$JS.ACK.hub.ACCHASH.USAGE.accounting.3.1048577.1000.{STORED_NS}.12.tok",
    ],
)
def test_the_place_is_the_one_nats_py_reads(reply: str) -> None:
    place = place_of(reply)
    assert place == Place(seq=1048577, stored_us=STORED_NS // 1000)
    meta = Msg(_client=None, subject="llm.v1.usage", reply=reply).metadata  # type: ignore[arg-type]
    assert place.seq == meta.sequence.stream
    # nats-py goes through a float and may round to the next microsecond; this floors.
    assert 0 <= micros(meta.timestamp) - place.stored_us <= 1


@pytest.mark.parametrize(
    "reply",
    [
        None,
        "",
        "_INBOX.abc.def",
        "$JS.ACK.USAGE.accounting.3.1048577.1000",  # too short
        "$JS.NAK.USAGE.accounting.3.1048577.1000.1.12",
        "$JS.ACK.USAGE.accounting.3.x.1000.1.12",
        "$JS.ACK.USAGE.accounting.3.5.1000.-1.12",
    ],
)
def test_a_subject_that_is_no_acknowledgement_has_no_place(reply: str | None) -> None:
    assert place_of(reply) is None


def _moments() -> list[float]:
    """Instants around the boundaries that matter: midnights, Mondays, month and year ends."""
    out: list[float] = []
    for year, month in [(2024, 2), (2024, 12), (2025, 1), (2026, 3), (2026, 12)]:
        last = calendar.monthrange(year, month)[1]
        for day in (1, 2, last):
            midnight = dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp()
            out += [midnight - 1e-3, midnight, midnight + 1e-6, midnight + 43_200, midnight - 1]
    return out


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly", "total", "3600", "7"])
def test_budget_days_answer_as_periods_does(period: str) -> None:
    days = BudgetDays()
    for ts in _moments() * 2:  # the second pass answers from memory
        assert days.current(period, ts) == periods.current(period, ts), (period, ts)
        assert days.day(ts) == periods.day(ts), ts


def test_budget_days_keep_a_bounded_memory() -> None:
    days = BudgetDays()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    for n in range(3 * KEEP):
        ts = start + n * 86400 + 5
        assert days.current("weekly", ts) == periods.current("weekly", ts)
        assert days.day(ts) == periods.day(ts)
        assert len(days._periods) <= KEEP
        assert len(days._days) <= KEEP


def _table(per_token: float) -> RouteTable:
    return decode_route_table(
        msgspec.json.encode(
            {
                "providers": {"own": {"kind": "openai-compatible", "api_base": "http://h/v1"}},
                "routes": {
                    "own": {
                        "deployments": [
                            {
                                "provider": "own",
                                "model": "m",
                                "price": {"input_per_token": per_token, "output_per_token": 0},
                            }
                        ]
                    }
                },
            }
        )
    )


def _event(deployment: str, model: str = "m") -> UsageEvent:
    return UsageEvent(
        id="e",
        request_id="e",
        ts=0.0,
        op="chat",
        alias="own",
        deployment=deployment,
        provider="own",
        model=model,
        key_id="k",
        prompt_tokens=1000,
        completion_tokens=0,
        total_tokens=1000,
    )


def test_remembered_rates_follow_the_route_table_and_stay_bounded() -> None:
    pricing = Pricing()
    cheap, dear = _table(1e-6), _table(5e-6)
    deployment = next(iter(cheap.deployments()))
    assert pricing.cost_nano(_event(deployment), cheap) == 1000 * 1000
    assert pricing.cost_nano(_event(deployment), dear) == 5 * 1000 * 1000  # a new revision
    for n in range(RATES_KEPT + 10):  # unknown models, as a provider may name them
        assert pricing.cost_nano(_event(f"gone-{n}", f"model-{n}"), dear) == 0
    assert len(pricing._rates) <= RATES_KEPT
    assert pricing.cost_nano(_event(deployment), dear) == 5 * 1000 * 1000
