"""Shared by the route and provider editors: where an item came from, compare-and-set saving,
and API errors placed at the form field they concern."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

import msgspec

from switchyard.admin.ui.forms import place, split_validation
from switchyard.errors import ApiError, Conflict
from switchyard.schemas.control import TableState
from switchyard.schemas.routing import RouteTable

_ENCODE = msgspec.json.Encoder()


def digest(item: Any) -> str:
    """A short fingerprint of a route or provider, to notice a concurrent edit of it."""
    if item is None:
        return ""
    return hashlib.sha256(_ENCODE.encode(item)).hexdigest()[:16]


def source(
    kind: str, name: str, live: RouteTable, file: RouteTable, builtin: Collection[str] = ()
) -> str:
    """``file`` (as switchyard.yaml says), ``drift`` (in the file, changed live), ``builtin``
    or ``builtin-drift`` (one of ``builtin``, the settings' own additions the file does not
    write: the demo model's), or ``live``."""
    file_items: dict[str, Any] = getattr(file, kind)
    if name not in file_items:
        return "live"
    same = getattr(live, kind).get(name) == file_items[name]
    if name in builtin:
        return "builtin" if same else "builtin-drift"
    return "file" if same else "drift"


class Problem(Exception):
    """A save that did not happen, with messages per form field (``""``: the whole form)."""

    def __init__(self, errors: dict[str, str], status: int = 400, conflict: bool = False) -> None:
        super().__init__(next(iter(errors.values()), "invalid"))
        self.errors = errors
        self.status = status
        self.conflict = conflict


def validation_problem(exc: msgspec.ValidationError, fields: list[str]) -> Problem:
    message, path = split_validation(str(exc))
    return Problem({place(path, fields): message})


def conflict(what: str) -> Problem:
    return Problem(
        {
            "": f"{what} was changed by someone else since you opened this form. "
            "Reload to see the current version (your input is kept below until you do)."
        },
        status=409,
        conflict=True,
    )


async def save(
    control: Any,
    state: TableState,
    table: RouteTable,
    *,
    fields: list[str],
    prefix: str,
    what: str,
) -> TableState:
    """Write ``table`` if the stored table is still at ``state.revision``.

    Raises:
        Problem: a 409 (someone else saved first) or the control service's validation error,
            placed at the field its ``param`` names.
    """
    try:
        result: TableState = await control.put_table(table, state.revision)
    except Conflict:
        raise conflict(what) from None
    except ApiError as exc:
        raise Problem({place(exc.param, fields, prefix): exc.message}, exc.status) from None
    return result
