"""How the route table in the settings file differs from the live one, and what applying it does.

The file's ``providers:`` and ``routes:`` seed the live table (NATS KV) on first start only;
after that the live table is the truth, edited at run time by the admin API and imports, and
kept across restarts. An edit to the file therefore changes nothing until it is applied, and
the user must be told so (on ``up`` and by ``switchyard config``) with a preview of what
applying it would change (``switchyard routes sync``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from switchyard.schemas.routing import RouteTable

Action = Literal["add", "remove", "change"]
_MARK = {"add": "+", "remove": "-", "change": "~"}


@dataclass(frozen=True, slots=True)
class Change:
    """One entry that differs. ``fields`` names what differs for a ``change``."""

    section: Literal["provider", "route"]
    name: str
    action: Action
    fields: tuple[str, ...] = ()

    def describe(self, added: str = "added", removed: str = "removed") -> str:
        what = {"add": added, "remove": removed, "change": f"{', '.join(self.fields)} changed"}
        return f"{_MARK[self.action]} {self.section} {self.name}: {what[self.action]}"


def _fields(before: msgspec.Struct, after: msgspec.Struct) -> tuple[str, ...]:
    old, new = msgspec.structs.asdict(before), msgspec.structs.asdict(after)
    return tuple(name for name in new if old.get(name) != new[name])


def diff(current: RouteTable, target: RouteTable) -> list[Change]:
    """What turning ``current`` into ``target`` adds, removes and changes (providers first)."""
    changes: list[Change] = []
    sections: tuple[tuple[Literal["provider", "route"], str], ...] = (
        ("provider", "providers"),
        ("route", "routes"),
    )
    for section, attr in sections:
        before: dict[str, msgspec.Struct] = getattr(current, attr)
        after: dict[str, msgspec.Struct] = getattr(target, attr)
        for name in sorted(after.keys() - before.keys()):
            changes.append(Change(section, name, "add"))
        for name in sorted(before.keys() - after.keys()):
            changes.append(Change(section, name, "remove"))
        for name in sorted(before.keys() & after.keys()):
            if before[name] != after[name]:
                changes.append(Change(section, name, "change", _fields(before[name], after[name])))
    return changes


def merge(current: RouteTable, incoming: RouteTable) -> RouteTable:
    """``current`` with every provider and route of ``incoming`` added or replaced."""
    return RouteTable(
        providers={**current.providers, **incoming.providers},
        routes={**current.routes, **incoming.routes},
    )


def drift_note(revision: int, changes: list[Change], file: str, limit: int = 8) -> list[str]:
    """The lines telling a user their file is not what is served (empty when it is)."""
    if not changes:
        return []
    lines = [
        f"note: the routes/providers in {file} differ from the live route table "
        f"(revision {revision}), which is what the stack serves:",
    ]
    shown = [
        c.describe(added=f"only in {file}", removed="only in the live table")
        for c in changes[:limit]
    ]
    lines += [f"    {line}" for line in shown]
    if len(changes) > limit:
        lines.append(f"    ... and {len(changes) - limit} more")
    lines += [
        "  The file seeds the table on first start only; run-time edits (admin API, import)",
        "  are kept across restarts. Preview applying the file: `switchyard routes sync`",
        "  (add --apply to write it, --merge to keep entries that exist only in the live table).",
    ]
    return lines
