"""Which budget period and which day a usage event falls in, worked out once per UTC day.

Every named budget period (daily, weekly, monthly, total) starts and ends at midnight UTC, so
within one UTC day its id and end are the same for every event, and so is the day's name.
Working them out per event (``limits.periods``: datetimes and a strftime each) cost ~7 µs of
accounting CPU per request, about a tenth of it; here it is two dict lookups. A window of a
number of seconds need not start at midnight, so it is asked of ``limits.periods`` each time
(such short budgets are for tests).
"""

from __future__ import annotations

from switchyard.limits import periods

DAY_S = 86400
# Entries kept: one per (named period, day) in use; more than a few only around midnight.
KEEP = 64


class BudgetDays:
    """``limits.periods.current`` and ``day`` for usage events, remembered per UTC day."""

    def __init__(self) -> None:
        self._periods: dict[tuple[str, int], tuple[str, float]] = {}
        self._days: dict[int, str] = {}

    def current(self, period: str, ts: float) -> tuple[str, float]:
        """(period id, unix time it ends) for ``period`` at ``ts``, as ``periods.current``."""
        if period not in periods.NAMED:
            return periods.current(period, ts)
        day = int(ts // DAY_S)
        key = (period, day)
        found = self._periods.get(key)
        if found is None:
            if len(self._periods) >= KEEP:
                self._periods.clear()
            # Worked out at the day's first instant, which every moment of the day shares.
            found = self._periods[key] = periods.current(period, day * DAY_S)
        return found

    def day(self, ts: float) -> str:
        """The UTC day of ``ts`` (``YYYY-MM-DD``), as ``periods.day``."""
        day = int(ts // DAY_S)
        found = self._days.get(day)
        if found is None:
            if len(self._days) >= KEEP:
                self._days.clear()
            found = self._days[day] = periods.day(day * DAY_S)
        return found
