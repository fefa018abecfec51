"""What a model-proxy concludes from its probes (:mod:`switchyard.workers.modelproxy.probes`):
a caller that never answered one is never taken for gone (callers may ignore keep-alives);
one that answered is gone after ``PROBE_MISSES`` unanswered in a row, and an answer between
misses starts the count again."""

from __future__ import annotations

from nats.aio.msg import Msg

from switchyard.workers.modelproxy import probes
from switchyard.workers.modelproxy.heartbeat import InFlight


def _entry() -> tuple[InFlight, list[bool]]:
    stopped: list[bool] = []
    entry = InFlight("_R_.x.y", Msg(_client=None), 0.0, 0.0)  # type: ignore[arg-type]
    entry.gone = lambda: stopped.append(True)
    return entry, stopped


def test_a_caller_that_never_answered_is_never_taken_for_gone() -> None:
    entry, stopped = _entry()
    for _ in range(10):
        probes._missed(entry)
    assert not stopped


def test_a_caller_that_answered_is_gone_after_misses_in_a_row() -> None:
    entry, stopped = _entry()
    probes._answered(entry)
    for _ in range(probes.PROBE_MISSES - 1):
        probes._missed(entry)
        assert not stopped
    probes._answered(entry)  # back: the count starts again
    for _ in range(probes.PROBE_MISSES - 1):
        probes._missed(entry)
    assert not stopped
    probes._missed(entry)
    assert stopped == [True]


def test_a_miss_asks_again_next_round() -> None:
    entry, _ = _entry()
    probes._answered(entry)
    entry.last_probe = 100.0
    probes._missed(entry)
    assert entry.last_probe == 100.0 - probes.PROBE_S
