"""The protocol level a route table needs, and who among the live processes is below it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchyard.control.table_levels import (
    BASE_LEVEL,
    HEARD_ALL_S,
    NEW_FIELDS,
    SILENT_AFTER_S,
    behind,
    needed_level,
    refusal,
    settle_s,
)
from switchyard.schemas import routing
from switchyard.schemas.monitor import ProcessState
from switchyard.schemas.protocol import PROTOCOL_LEVEL
from switchyard.schemas.routing import RouteTable

pytestmark = pytest.mark.unit

FIELD = "price.web_search_per_call"


def _table(*prices: dict[str, Any] | None) -> RouteTable:
    deployments = [
        {"provider": "p", "model": f"m{i}", **({"price": price} if price else {})}
        for i, price in enumerate(prices)
    ]
    doc = {
        "providers": {"p": {"kind": "openai"}},
        "routes": {"r": {"deployments": deployments}},
    }
    return msgspec.convert(doc, RouteTable)


TOKENS = {"input_per_token": 1e-6, "output_per_token": 2e-6}
PLAIN = _table(None, {**TOKENS, "cache_read_per_token": 1e-7})
SEARCHING = _table(None, {**TOKENS, "web_search_per_call": 0.02})


def _p(component: str, instance: str, protocol: int, **fields: object) -> ProcessState:
    defaults: dict[str, object] = {
        "host": "box",
        "pid": 1,
        "healthy": True,
        "ready": True,
        "cpu_percent": 0.0,
        "rss_bytes": 0,
        "uptime_s": 10.0,
        "last_seen_s": 0.5,
    }
    return ProcessState(
        **{**defaults, **fields},  # type: ignore[arg-type]
        component=component,
        instance=instance,
        protocol=protocol,
    )


def test_a_table_needs_level_3_only_when_a_price_sets_web_search_per_call() -> None:
    assert needed_level(RouteTable()) == needed_level(PLAIN) == BASE_LEVEL == 2
    assert needed_level(SEARCHING) == 3
    # Zero is a price (searches free), written into the table like any other.
    assert needed_level(_table({**TOKENS, "web_search_per_call": 0})) == 3


def test_a_table_needs_level_4_when_a_timeouts_sets_idle_s() -> None:
    """``idle_s`` is written only when set (``omit_defaults``): a table that leaves it at its
    default is read by every level, encoded without it."""
    provider: dict[str, Any] = {"kind": "openai"}
    doc = {"providers": {"p": provider}, "routes": {}}
    assert needed_level(msgspec.convert(doc, RouteTable)) == BASE_LEVEL
    assert b"idle_s" not in msgspec.json.encode(msgspec.convert(doc, RouteTable))
    provider["timeouts"] = {"idle_s": 30}
    assert needed_level(msgspec.convert(doc, RouteTable)) == 4
    deployment = {"provider": "p", "model": "m", "timeouts": {"idle_s": 5}}
    deployed = {
        "providers": {"p": {"kind": "openai"}},
        "routes": {"r": {"deployments": [deployment]}},
    }
    table = msgspec.convert(deployed, RouteTable)
    assert needed_level(table) == 4
    # 0.2.0's processes state level 3 and refuse the field: the write waits for them.
    assert "`timeouts.idle_s` needs protocol level 4" in (
        refusal(table, [_p("head", "h", 3)]) or ""
    )
    # Older readers take a table without the new field as it always was.
    assert msgspec.json.decode(msgspec.json.encode(table.routes["r"].deployments[0].timeouts)) == {
        "idle_s": 5
    }


def test_this_version_reads_every_field_it_guards() -> None:
    assert all(BASE_LEVEL < f.level <= PROTOCOL_LEVEL for f in NEW_FIELDS)


# Every field of the route-table structs that level-2 processes read. A new field fails this
# test: older processes refuse a table that sets it, so it goes into NEW_FIELDS with a new level
# (switchyard/schemas/protocol.py), then here.
LEVEL_2_FIELDS = {
    "RouteTable": {"providers", "routes"},
    "Provider": {"kind", "api_base", "api_version", "secret", "concurrency", "timeouts"},
    "Timeouts": {"first_token_s", "stream_s", "request_s"},
    "Route": {"deployments", "fallbacks", "description"},
    "Deployment": {"provider", "model", "weight", "concurrency", "timeouts", "price"},
    "Price": {
        "input_per_token",
        "output_per_token",
        "cache_read_per_token",
        "cache_write_per_token",
    },
}


def test_every_newer_route_table_field_is_guarded() -> None:
    guarded = {f.name for f in NEW_FIELDS}
    for struct, known in LEVEL_2_FIELDS.items():
        fields = set(getattr(routing, struct).__struct_fields__)
        newer = {f"{struct.lower()}.{name}" for name in fields - known}
        assert newer <= guarded, f"{newer - guarded}: add them to table_levels.NEW_FIELDS"


def test_only_live_processes_below_the_level_count() -> None:
    processes = [
        _p("head", "head-1", 3),
        _p("head", "head-2", 2),
        _p("accounting", "accounting", 2, ready=False, healthy=False),  # starting: reads too
        _p("modelproxy", "modelproxy-1", 2, last_seen_s=SILENT_AFTER_S + 1, healthy=False),
        _p("tail", "t1", 1),
    ]
    assert [p.instance for p in behind(processes, 3)] == ["t1", "accounting", "head-2"]
    assert [p.instance for p in behind(processes, 2)] == ["t1"]


def test_a_table_using_the_field_is_refused_naming_it_and_the_older_processes() -> None:
    processes = [_p("head", "head-1", 2), _p("accounting", "accounting", 2), _p("head", "h3", 3)]
    why = refusal(SEARCHING, processes)
    assert why == (
        f"`{FIELD}` needs protocol level 3; still older: accounting (level 2), head-1 (level 2); "
        "finish the upgrade (docs/operations.md, Upgrading a running platform) and retry, or "
        "leave it out until then"
    )


def test_a_table_is_written_when_nothing_older_runs_or_it_needs_no_newer_level() -> None:
    old = [_p("head", "head-1", 2), _p("tail", "tail", 1)]
    assert refusal(PLAIN, old) is None
    assert refusal(RouteTable(), old) is None
    assert refusal(SEARCHING, [_p("head", "head-1", 3)]) is None
    # The first start: nothing reports yet.
    assert refusal(SEARCHING, []) is None
    # Gone silent.
    assert refusal(SEARCHING, [_p("head", "head-1", 2, last_seen_s=60.0, healthy=False)]) is None


def test_a_refusal_names_five_processes_and_counts_the_others() -> None:
    processes = [_p("modelproxy", f"modelproxy-{n}", 2) for n in range(8)]
    why = refusal(SEARCHING, processes)
    assert why is not None
    assert "modelproxy-4 (level 2) and 3 more;" in why
    assert "modelproxy-5" not in why


def test_a_table_older_processes_would_refuse_waits_until_every_process_was_heard() -> None:
    assert settle_s(PLAIN, 0.0) == 0.0
    assert settle_s(SEARCHING, 0.0) == HEARD_ALL_S
    assert settle_s(SEARCHING, HEARD_ALL_S - 2) == 2.0
    assert settle_s(SEARCHING, HEARD_ALL_S + 60) == 0.0
