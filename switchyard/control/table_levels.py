"""Route tables that older processes would refuse, kept unwritten while such processes run.

Every route-table struct forbids unknown fields (a misspelt setting is an error, not a setting
silently dropped), so a process reading a table that sets a field newer than itself refuses the
whole table: it logs ``ignored route table revision N`` and keeps the table it had, and does the
same with every later revision. Heads then answer 404 for new routes, accounting bills them at
nothing, an older gateway's ``GET /admin/v1/routes`` fails. Each such field is given the
wire-protocol level that first reads it (``switchyard.schemas.protocol``): :func:`needed_level`
is the level a table needs, :func:`behind` the live processes stating a lower one, and
:func:`refusal` the control service's answer while any exists.

Only live processes count, as in ``upgrade_order``: one that said goodbye has left the process
table, one silent for three heartbeats is not running. One that runs but is not ready (starting,
draining) counts: it reads the table too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from switchyard.control.upgrade_order import who
from switchyard.runtime.reporting import HEARTBEAT_S
from switchyard.schemas.monitor import ProcessState
from switchyard.schemas.routing import Price, RouteTable
from switchyard.schemas.timeouts import Timeouts

# Every table that sets none of NEW_FIELDS is read by processes of this level (and of level 1:
# the level field is newer than every field of the route table before these).
BASE_LEVEL = 2
SILENT_AFTER_S = 3 * HEARTBEAT_S  # as the monitor's "healthy": no beat for three intervals
# A control replica that just subscribed to heartbeats has not heard every process yet: each
# beats within HEARTBEAT_S, so a table needing a newer level waits this long before it is judged.
HEARD_ALL_S = HEARTBEAT_S + 1.0
NAMED = 5  # processes named in a refusal; the others are counted


class NewField(NamedTuple):
    """A route-table field that readers below ``level`` refuse."""

    level: int
    name: str  # as the docs and the refusal name it
    used: Callable[[RouteTable], bool]


def _prices(table: RouteTable) -> Iterator[Price]:
    for route in table.routes.values():
        for dep in route.deployments:
            if dep.price is not None:
                yield dep.price


def _timeouts(table: RouteTable) -> Iterator[Timeouts]:
    for provider in table.providers.values():
        yield provider.timeouts
    for route in table.routes.values():
        for dep in route.deployments:
            if dep.timeouts is not None:
                yield dep.timeouts


# One line per field: raise PROTOCOL_LEVEL with it (switchyard/schemas/protocol.py).
NEW_FIELDS: tuple[NewField, ...] = (
    NewField(
        3,
        "price.web_search_per_call",
        lambda t: any(p.web_search_per_call is not None for p in _prices(t)),
    ),
    NewField(4, "timeouts.idle_s", lambda t: any(x.idle_s is not None for x in _timeouts(t))),
)


def newer_fields(table: RouteTable) -> list[NewField]:
    """The fields of :data:`NEW_FIELDS` that ``table`` sets."""
    return [f for f in NEW_FIELDS if f.used(table)]


def needed_level(table: RouteTable) -> int:
    """The lowest protocol level whose processes read ``table``."""
    return max((f.level for f in newer_fields(table)), default=BASE_LEVEL)


def behind(processes: Iterable[ProcessState], level: int) -> list[ProcessState]:
    """The live processes stating a protocol level below ``level``, lowest level first."""
    return sorted(
        (p for p in processes if p.last_seen_s <= SILENT_AFTER_S and p.protocol < level),
        key=lambda p: (p.protocol, p.component, p.instance),
    )


def settle_s(table: RouteTable, listening_s: float) -> float:
    """How long to wait before judging ``table``, heartbeats heard for ``listening_s``:
    0 for a table every process reads."""
    if needed_level(table) <= BASE_LEVEL:
        return 0.0
    return max(0.0, HEARD_ALL_S - listening_s)


def refusal(table: RouteTable, processes: Iterable[ProcessState]) -> str | None:
    """Why ``table`` must not be written now (a live process would refuse it), or None."""
    level = needed_level(table)
    older = behind(processes, level) if level > BASE_LEVEL else []
    if not older:
        return None
    lowest = older[0].protocol
    needs = ", ".join(
        f"`{f.name}` needs protocol level {f.level}"
        for f in newer_fields(table)
        if f.level > lowest
    )
    named = ", ".join(f"{who(p)} (level {p.protocol})" for p in older[:NAMED])
    if len(older) > NAMED:
        named += f" and {len(older) - NAMED} more"
    them = "them" if ", " in needs else "it"
    return (
        f"{needs}; still older: {named}; finish the upgrade (docs/operations.md, Upgrading a "
        f"running platform) and retry, or leave {them} out until then"
    )
