"""The upgrade-order rule (heads before model-proxies), the log it
writes when a bad mix starts and ends, heartbeats from processes older than the level field,
and how ``switchyard top`` shows versions and a broken order."""

from __future__ import annotations

import io
import logging

import msgspec
import pytest
from rich.console import Console

from switchyard.control.upgrade_order import (
    DEPENDENTS,
    OrderWatch,
    ahead_by_component,
    violations,
)
from switchyard.runtime.reporting import Reporter
from switchyard.schemas.monitor import (
    ENCODER,
    HEARTBEAT,
    OVERVIEW,
    Overview,
    ProcessState,
    Rates,
)
from switchyard.schemas.protocol import PROTOCOL_LEVEL, UNSTATED_LEVEL
from switchyard.top import frame

pytestmark = pytest.mark.unit


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
        "version": f"0.{protocol}.0",
    }
    fields = {**defaults, **fields, "component": component, "instance": instance}
    return ProcessState(**fields, protocol=protocol)  # type: ignore[arg-type]


def test_the_documented_order_and_its_reverse_in_a_rolling_upgrade() -> None:
    # Heads first, then model-proxies, then the clients: every step is safe.
    steps = [
        [_p("head", "h1", 1), _p("modelproxy", "m1", 1), _p("tail", "t", 1)],
        [_p("head", "h1", 2), _p("modelproxy", "m1", 1), _p("tail", "t", 1)],
        [_p("head", "h1", 2), _p("modelproxy", "m1", 2), _p("tail", "t", 1)],
        [_p("head", "h1", 2), _p("modelproxy", "m1", 2), _p("tail", "t", 2)],
    ]
    assert [violations(s) for s in steps] == [[], [], [], []]


def test_a_model_proxy_newer_than_a_head_breaks_the_order_and_names_both() -> None:
    found = violations(
        [
            _p("head", "h1", 2),
            _p("head", "h2", 1),
            _p("modelproxy", "m1", 2),
            _p("modelproxy", "m2", 1),
            _p("tail", "t", 1),
        ]
    )
    assert [v.first for v in found] == ["head"]
    (v,) = found
    assert [(p.instance, p.protocol, p.version) for p in v.behind] == [("h2", 1, "0.1.0")]
    assert [(p.instance, p.protocol) for p in v.ahead] == [("m1", 2)]
    assert "modelproxy m1 (level 2) newer than head h2 (level 1)" in v.summary
    assert "upgrade every head first" in v.summary
    assert ahead_by_component(found) == {c: int(c == "modelproxy") for c in DEPENDENTS}


def test_edges_and_the_batch_runner_newer_than_a_model_proxy_are_no_break() -> None:
    """They name the key by its hash on a cancel, which every model-proxy reads."""
    for client in ("tail", "gateway", "batch"):
        mix = [_p("head", "h", 2), _p("modelproxy", "m", 1), _p(client, f"{client}-1", 2)]
        assert violations(mix) == []
    assert DEPENDENTS == ("modelproxy",)


def test_only_live_processes_count() -> None:
    """A head that went silent or is not ready is not reading anything."""
    mix = [_p("head", "h-new", 2), _p("modelproxy", "m", 2)]
    assert violations([*mix, _p("head", "h-old", 1, healthy=False)]) == []
    assert violations([*mix, _p("head", "h-old", 1)]) != []
    # Without a head (or a model-proxy) there is nothing to mix with.
    assert violations([_p("modelproxy", "m", 3), _p("accounting", "a", 1)]) == []
    # Components outside the rules never count.
    assert violations([_p("head", "h", 1), _p("secrets", "s", 2), _p("control", "c", 2)]) == []


def test_the_log_says_when_a_mix_starts_changes_and_ends_not_at_every_look(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.upgrade_order")
    watch = OrderWatch(log)
    bad = violations([_p("head", "h", 1), _p("modelproxy", "m", 2)])
    worse = violations([_p("head", "h", 1), _p("modelproxy", "m", 2), _p("modelproxy", "n", 2)])
    with caplog.at_level(logging.INFO, logger=log.name):
        watch.observe([])
        for _ in range(3):
            watch.observe(bad)
        watch.observe(worse)
        watch.observe(worse)
        watch.observe([])
        watch.observe([])
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == [logging.WARNING, logging.WARNING, logging.INFO]
    assert "modelproxy m (level 2) newer than head h (level 1)" in records[0][1]
    assert "modelproxy n (level 2)" in records[1][1]
    assert "restored" in records[2][1]


def test_a_heartbeat_from_before_the_level_field_reads_as_level_one() -> None:
    old = b'{"component":"head","instance":"h","host":"x","pid":3,"ready":true}'
    beat = HEARTBEAT.decode(old)
    assert (beat.version, beat.protocol) == ("", UNSTATED_LEVEL)
    # An overview from a control older than these fields still decodes too.
    overview = OVERVIEW.decode(
        b'{"at":1.0,"deployments":[],"totals":{},"processes":[{"component":"head",'
        b'"instance":"h","host":"x","pid":3,"healthy":true,"ready":true,"cpu_percent":0,'
        b'"rss_bytes":0,"uptime_s":1,"last_seen_s":0}]}'
    )
    assert overview.upgrade_order == []
    assert (overview.processes[0].version, overview.processes[0].protocol) == ("", 1)


def test_a_process_states_its_version_and_level() -> None:
    beat = Reporter(None, "head", "h", lambda: True).heartbeat()  # type: ignore[arg-type]
    decoded = msgspec.json.decode(ENCODER.encode(beat))
    assert decoded["protocol"] == PROTOCOL_LEVEL > UNSTATED_LEVEL
    assert decoded["version"] == __import__("switchyard").__version__


def _screen(overview: Overview) -> list[str]:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(frame(overview, url="http://gw"))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_top_shows_each_version_and_a_line_when_the_order_is_broken() -> None:
    processes = [_p("head", "h1", 1, version="0.0.9"), _p("modelproxy", "m1", 2, version="")]
    overview = Overview(
        at=1.0,
        deployments=[],
        processes=processes,
        totals=Rates(),
        upgrade_order=violations(processes),
    )
    lines = _screen(overview)
    warning = [line for line in lines if "Upgrade order broken" in line]
    assert warning == [f"Upgrade order broken: {overview.upgrade_order[0].summary}"]
    assert "VERSION" in next(line for line in lines if "COMPONENT" in line)
    head = next(line for line in lines if line.startswith("head "))
    assert "0.0.9 p1" in head
    proxy = next(line for line in lines if line.startswith("modelproxy "))
    assert "? p2" in proxy  # no version stated
    fine = _screen(msgspec.structs.replace(overview, upgrade_order=[]))
    assert not any("pgrade order" in line for line in fine)
