"""``switchyard status``'s routing line: processes can all be healthy while every deployment of
a route is cooling down (its requests fail at once), which the process list cannot show.

Read from the gateway's overview (what ``switchyard top`` shows, through the same reader the
CLI hands in); a stack whose gateway does not answer says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchyard.errors import GatewayError
from switchyard.schemas.attention import routing_trouble
from switchyard.schemas.monitor import Overview

_SHOWN = 5  # deployments and routes named on the line; the rest counted
TOP_HINT = "see `switchyard top`"


def routing_summary(read: Callable[[], Overview]) -> tuple[dict[str, Any], str, bool]:
    """The ``routing`` part of ``status --json``, its human line, and whether it is trouble
    (a deployment cooling down, or the overview could not be read)."""
    try:
        overview = read()
    except GatewayError as exc:
        doc = {"read": False, "error": str(exc), "cooling_down": [], "routes_down": []}
        return doc, f"routing: not read ({exc})", True
    cooling, down = routing_trouble(overview.deployments)
    doc = {
        "read": True,
        "error": None,
        "cooling_down": [
            {
                "deployment": d.id,
                "aliases": d.aliases,
                "seconds_left": d.cooldown.seconds_left,
                "status": d.cooldown.status,
            }
            for d in cooling
            if d.cooldown is not None
        ],
        "routes_down": down,
    }
    if not cooling:
        return doc, f"routing: no deployment cooling down ({TOP_HINT} for the live view)", False
    named = ", ".join(
        f"{d.id} ({d.cooldown.seconds_left:.0f}s left, after {d.cooldown.status})"
        for d in cooling[:_SHOWN]
        if d.cooldown is not None
    )
    line = f"routing: {_count(len(cooling), 'deployment')} cooling down: {named}"
    line += _more(len(cooling))
    if down:
        line += (
            f"; every deployment cooling down for {_count(len(down), 'route')}: "
            f"{', '.join(down[:_SHOWN])}{_more(len(down))} (refused at once unless a fallback"
            " answers)"
        )
    return doc, f"{line}; {TOP_HINT}", True


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _more(n: int) -> str:
    return f" and {n - _SHOWN} more" if n > _SHOWN else ""
