"""Budget periods: which spend counter is current, and when it resets (UTC)."""

from __future__ import annotations

import calendar
import datetime as dt

NAMED = ("daily", "weekly", "monthly", "total")


def valid(period: str) -> bool:
    return period in NAMED or (period.isdecimal() and len(period) <= 10 and int(period) > 0)


def current(period: str, now: float) -> tuple[str, float]:
    """(period id, unix time it ends) for ``period`` at ``now``.

    ``period`` is ``daily``, ``weekly`` (ISO weeks), ``monthly``, ``total`` or a number of
    seconds (fixed windows since the epoch: handy for short test budgets).
    """
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"d{start:%Y%m%d}", (start + dt.timedelta(days=1)).timestamp()
    if period == "weekly":
        start = (moment - dt.timedelta(days=moment.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return f"w{start:%Y%m%d}", (start + dt.timedelta(days=7)).timestamp()
    if period == "monthly":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(start.year, start.month)[1]
        return f"m{start:%Y%m}", (start + dt.timedelta(days=days)).timestamp()
    if period == "total":
        return "all", float("inf")
    seconds = int(period) if valid(period) and period not in NAMED else 30 * 86400
    index = int(now // seconds)
    return f"s{seconds}-{index}", float((index + 1) * seconds)


def day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
