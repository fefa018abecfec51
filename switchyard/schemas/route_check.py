"""A route table checked as the control service will check it, before anything is written.

A table built in memory (an import, a form) is a set of structs nobody decoded: a route name
the ``Name`` pattern refuses, or a number JSON cannot carry, passes :func:`route_table_findings`
and is refused only when the control service decodes what it was sent. Callers that write
something first (the secrets a LiteLLM import carries) check with :func:`edit_problems` and
write nothing when it finds a problem.
"""

from __future__ import annotations

import re
from typing import get_args

import msgspec

from switchyard.schemas.routing import RouteProblem, RouteTable, route_table_findings
from switchyard.schemas.table_names import NAME_HINT, Name

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(RouteTable)
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)
_NAME = re.compile(get_args(Name)[1].pattern)


def type_problems(table: RouteTable) -> list[RouteProblem]:
    """What the route table's types refuse in ``table`` once encoded, as the control service
    decodes it (empty when nothing): names first, each said, then the first other value."""
    names = [
        RouteProblem(f"{section}.{name}", f"`{name}` is not a name the table takes", NAME_HINT)
        for section, items in (("providers", table.providers), ("routes", table.routes))
        for name in items
        if not _NAME.match(name)
    ]
    if names:
        return names
    try:
        _DECODER.decode(_ENCODER.encode(table))
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        problem = match.group("msg") if match else str(exc)
        where = (match.group("path") if match else None) or "(document)"
        if "got `null`" in problem:  # how msgspec writes an infinity or a NaN
            return [RouteProblem(where, "not a finite number", "give a finite number")]
        return [RouteProblem(where, problem, "give a value the route table takes")]
    return []


def edit_problems(table: RouteTable, previous: RouteTable) -> list[RouteProblem]:
    """Why the control service would refuse to replace ``previous`` with ``table``: its
    types first (a table that does not decode is judged no further), then its rules for
    what the edit changes."""
    return type_problems(table) or route_table_findings(table, previous=previous).problems
