"""What a model-proxy concludes from its probes (:mod:`switchyard.workers.modelproxy.probes`):
a caller that never answered one is never taken for gone (callers may ignore keep-alives) and is
asked no more after ``NEVER_ANSWERED``; one that answered is gone after ``PROBE_MISSES``
unanswered in a row spanning ``GONE_AFTER_S``, and an answer between misses starts the count
again. Only callers the head does not vouch for (``Sy-Usage-Id``) are probed at all."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.workers.modelproxy import probes
from switchyard.workers.modelproxy.heartbeat import Heartbeats, InFlight


def _entry() -> tuple[InFlight, list[bool]]:
    stopped: list[bool] = []
    entry = InFlight("_R_.x.y", Msg(_client=None), 0.0, 0.0)  # type: ignore[arg-type]
    entry.probed = True
    entry.gone = lambda: stopped.append(True)
    return entry, stopped


def test_a_caller_that_never_answered_is_never_taken_for_gone_and_is_asked_no_more() -> None:
    entry, stopped = _entry()
    for n in range(1, 11):
        probes._missed(entry, 100.0 * n)
        assert entry.probed == (n < probes.NEVER_ANSWERED)
    assert not stopped


def test_a_caller_that_answered_is_gone_after_misses_in_a_row_spanning_the_rule() -> None:
    entry, stopped = _entry()
    probes._answered(entry)
    for n in range(probes.PROBE_MISSES - 1):
        probes._missed(entry, 100.0 + n)
        assert not stopped
    probes._answered(entry)  # back: the count starts again
    for n in range(probes.PROBE_MISSES - 1):
        probes._missed(entry, 200.0 + 3 * n)
    assert not stopped
    probes._missed(entry, 200.0 + probes.GONE_AFTER_S - 0.1)  # enough misses, too soon
    assert not stopped
    probes._missed(entry, 200.0 + probes.GONE_AFTER_S)
    assert stopped == [True]
    assert entry.silent  # its caller is told why


def test_two_quick_misses_stop_nobody() -> None:
    """The old rule (two in a row, a few seconds apart) stopped a caller whose answers were
    merely late; now that takes misses spanning ``GONE_AFTER_S``."""
    entry, stopped = _entry()
    probes._answered(entry)
    probes._missed(entry, 10.0)
    probes._missed(entry, 13.0)
    probes._missed(entry, 16.0)
    assert not stopped


def _dispatched(headers: dict[str, str] | None) -> Msg:
    return Msg(_client=None, subject="d", reply="r", data=b"", headers=headers)  # type: ignore[arg-type]


async def test_only_callers_the_head_does_not_vouch_for_are_probed() -> None:
    """An edge's or the batch runner's request (no ``Sy-Usage-Id``) gets keep-alives, never a
    probe: its answer could queue behind the edge's chunks and stop a caller still there."""

    async def probe(entries: list[InFlight], out: Any) -> None:
        return None

    beats = Heartbeats(None, keepalive_s=5, progress_s=100, probe=probe, probe_s=3)  # type: ignore[arg-type]
    edge = beats.track("_R_.edge", _dispatched({"Sy-Deadline": "1"}))
    internal = beats.track("_R_.app", _dispatched({h.USAGE_ID: "u1"}))
    probed: list[InFlight] = []
    callers: list[InFlight] = []
    beats._due(edge, edge.last_probe + 10, callers, probed, [])
    beats._due(internal, internal.last_probe + 10, callers, probed, [])
    assert probed == [internal]
    assert callers == [edge]
