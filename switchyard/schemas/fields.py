"""Reading a struct's declared types by the path a msgspec error names.

msgspec says ``Invalid enum value 'openai-compat' - at `$.providers[...].kind``` and no more:
the settings loader and the admin API look up the field's declared type here to list the
values it takes (and the fields a struct has, for an unknown one).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import msgspec

_PARTS = re.compile(r"\.|\[")


def struct_of(tp: Any) -> Any:
    """The first msgspec struct in ``tp`` (itself, or inside ``X | None``, ``dict[str, X]``,
    ``tuple[X, ...]``); None when it holds none."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    for arg in getattr(tp, "__args__", ()):
        found = struct_of(arg)
        if found is not None:
            return found
    return None


def type_at(root: Any, path: str) -> Any:
    """The declared type at ``path`` (a msgspec error path without ``$``: ``a.b[0].c``,
    ``routes[...].deployments``) from the struct ``root``; None where the path leaves the
    structs. A ``[..]`` step goes into the element of the mapping or sequence before it."""
    tp: Any = root
    for part in (p for p in _PARTS.split(path) if p):
        struct = struct_of(tp)
        if struct is None:
            return None
        if part.endswith("]"):
            tp = struct
            continue
        fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
        if part not in fields:
            return None
        tp = fields[part]
    return tp


def choices(tp: Any) -> tuple[str, ...]:
    """The values a ``Literal`` type (also inside ``Annotated`` or ``X | None``) takes, as
    text; empty for any other type."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return tuple(str(value) for value in typing.get_args(tp))
    if origin is typing.Annotated:
        return choices(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(value for arg in typing.get_args(tp) for value in choices(arg))
    return ()


def enum_hint(problem: str, root: Any, path: str) -> str:
    """``use one of: ...`` for msgspec's ``Invalid enum value`` at ``path`` of ``root``;
    empty for any other problem, or a field whose values are not listed in its type."""
    if not problem.startswith("Invalid enum value"):
        return ""
    values = choices(type_at(root, path))
    return f"use one of: {', '.join(values)}" if values else ""
