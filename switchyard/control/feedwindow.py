"""The heads' window for one deployment: how long its requests take, as the feeder tells heads.

Heads cap what they send straight to dispatch per window (see :mod:`switchyard.control.feeder`).
"""

from __future__ import annotations

from dataclasses import dataclass

# The heads' window is the deployment's measured time per request. With no traffic for a while
# the measure is gone; the last one is kept this long (then 1 s), so a burst after a pause is
# capped by what the deployment really takes, not parked in HOLD past a 1 s window.
WINDOW_MEMORY_S = 900.0
DEFAULT_WINDOW_S = 1.0


@dataclass(slots=True)
class Window:
    """The heads' window for one deployment (see :data:`WINDOW_MEMORY_S`)."""

    last: float | None = None  # the last measured time per request (seconds)
    measured_at: float = 0.0

    def seconds(self, latency: float | None, now: float) -> float:
        if latency:
            self.last, self.measured_at = latency, now
        elif self.last is None or now - self.measured_at > WINDOW_MEMORY_S:
            return DEFAULT_WINDOW_S
        return min(30.0, max(0.01, self.last))
