"""The heads' window (time per request) a deployment's scheduling record carries."""

from __future__ import annotations

import pytest

from switchyard.control.feedwindow import DEFAULT_WINDOW_S, WINDOW_MEMORY_S, Window

pytestmark = pytest.mark.unit


def test_the_window_is_the_measured_time_per_request_within_bounds() -> None:
    window = Window()
    assert window.seconds(0.05, now=100.0) == 0.05
    assert window.seconds(0.001, now=101.0) == 0.01
    assert window.seconds(120.0, now=102.0) == 30.0


def test_a_deployment_never_measured_gets_the_default() -> None:
    assert Window().seconds(None, now=100.0) == DEFAULT_WINDOW_S


def test_a_pause_in_traffic_keeps_the_last_measure_for_a_while_then_the_default() -> None:
    window = Window()
    window.seconds(0.05, now=100.0)
    # No traffic in the monitor's window: a burst after the pause is capped by 50 ms, as
    # before it, not by 1 s (which parked most of a fast deployment's burst in HOLD).
    assert window.seconds(None, now=130.0) == 0.05
    assert window.seconds(None, now=100.0 + WINDOW_MEMORY_S) == 0.05
    assert window.seconds(None, now=101.0 + WINDOW_MEMORY_S) == DEFAULT_WINDOW_S
    assert window.seconds(0.2, now=2000.0) == 0.2  # measured again: the new value
