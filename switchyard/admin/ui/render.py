"""Jinja2 templates shipped in the package; autoescaped, so names people typed are text."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

NONE = "\u2013"  # an en dash: "no value"
NAV = (
    ("overview", "Overview", "/ui/"),
    ("queues", "Queues", "/ui/queues"),
    ("secrets", "Secrets", "/ui/secrets"),
    ("routes", "Providers & routes", "/ui/routes"),
    ("keys", "Keys", "/ui/keys"),
    ("spend", "Spend", "/ui/spend"),
    ("batches", "Batches", "/ui/batches"),
    ("audit", "Audit", "/ui/audit"),
    ("sessions", "Sessions", "/ui/sessions"),
)


def usd(value: float | None, digits: int = 2) -> str:
    """Dollars to ``digits`` places; an amount below a cent to its first two significant
    digits (at most 8 places): a budget of $0.000001 read "$0.0000"."""
    if value is None:
        return NONE
    if 0 < abs(value) < 0.01:
        places = min(8, max(digits, 1 - math.floor(math.log10(abs(value)))))
        if round(value, places) == 0:
            return "<$0.00000001"
        whole, _, cents = f"{value:.{places}f}".partition(".")
        return f"${whole}.{cents.rstrip('0').ljust(digits, '0')}"
    return f"${value:,.{digits}f}"


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return NONE
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def when(ts: float | str | None) -> str:
    """Unix seconds or an ISO string as ``2026-08-21 14:03 UTC``."""
    if not ts:
        return NONE
    if isinstance(ts, str):
        try:
            moment = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return ts[:19]
    else:
        moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(ts: float | None) -> str:
    if not ts:
        return NONE
    return duration(time.time() - ts) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


def make_env() -> Environment:
    env = Environment(
        loader=PackageLoader("switchyard.admin.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=usd, number=number, ms=ms, when=when, ago=ago, duration=duration, percent=percent
    )
    env.globals["nav"] = NAV
    return env


ENV = make_env()


def render(template: str, **values: Any) -> str:
    return ENV.get_template(template).render(**values)
