"""What adding imported providers and routes to the live route table does to each name.

An import adds entries by name to a table that is already serving. An entry of the same name
that differs is *replaced*, and that can break routes the import never mentions: an imported
provider named like an unrelated live one takes over its base URL and secret for every route
that uses it. So the admin UI's import preview and ``switchyard import litellm-config`` both
show, per name, whether it is new, unchanged or replaces a live entry (and which fields
differ), from this one comparison; the CLI refuses to replace without ``--replace``. An entry
identical to the live one changes nothing and is no clash. Names the settings file defines can
be held back (``kept``), so an import never edits what the file owns.
"""

from __future__ import annotations

from collections.abc import KeysView, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from switchyard.schemas.routing import Provider, Route, RouteTable

Section = Literal["provider", "route"]
# new: not live yet; unchanged: the live one is identical; replaces: the live one differs;
# kept: the settings file defines the name, so the import leaves it alone.
State = Literal["new", "unchanged", "replaces", "kept"]


@dataclass(frozen=True, slots=True)
class NameChange:
    """What importing one provider or route does. ``differs`` names the fields that differ
    from the live entry when the state is ``replaces``."""

    section: Section
    name: str
    state: State
    item: Provider | Route
    differs: tuple[str, ...] = ()


def differing_fields(before: msgspec.Struct, after: msgspec.Struct) -> tuple[str, ...]:
    """The fields of ``after`` whose values differ from ``before`` (same struct type)."""
    old, new = msgspec.structs.asdict(before), msgspec.structs.asdict(after)
    return tuple(name for name in new if old.get(name) != new[name])


def compare(
    live: RouteTable, incoming: RouteTable, *, kept: RouteTable | None = None
) -> list[NameChange]:
    """What merging ``incoming`` into ``live`` does to each of its names: providers first,
    each section by name. Names in ``kept`` are reported as kept whatever the live table holds.
    """
    held = kept or RouteTable()
    return [
        *_section("provider", incoming.providers, live.providers, held.providers.keys()),
        *_section("route", incoming.routes, live.routes, held.routes.keys()),
    ]


def _section(
    section: Section,
    new: Mapping[str, Provider | Route],
    now: Mapping[str, Provider | Route],
    keep: KeysView[str],
) -> list[NameChange]:
    out: list[NameChange] = []
    for name in sorted(new):
        item = new[name]
        current = now.get(name)
        if name in keep:
            out.append(NameChange(section, name, "kept", item))
        elif current is None:
            out.append(NameChange(section, name, "new", item))
        elif current == item:
            out.append(NameChange(section, name, "unchanged", item))
        else:
            differs = differing_fields(current, item)
            out.append(NameChange(section, name, "replaces", item, differs))
    return out


def replaced(changes: list[NameChange]) -> list[NameChange]:
    """The changes that would overwrite a live entry with a different one."""
    return [c for c in changes if c.state == "replaces"]


def merge(live: RouteTable, incoming: RouteTable, *, kept: RouteTable | None = None) -> RouteTable:
    """``live`` with every provider and route of ``incoming`` added or replaced, except the
    names in ``kept``."""
    held = kept or RouteTable()
    providers = {n: p for n, p in incoming.providers.items() if n not in held.providers}
    routes = {a: r for a, r in incoming.routes.items() if a not in held.routes}
    return msgspec.structs.replace(
        live, providers={**live.providers, **providers}, routes={**live.routes, **routes}
    )
