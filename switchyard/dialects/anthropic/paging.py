"""Anthropic's cursor pages, shared by its model and message batch listings.

A page is ``{"data": [...], "has_more", "first_id", "last_id"}``, chosen by ``limit`` (1-1000,
default 20) and at most one of ``after_id`` (the items after that one) and ``before_id`` (the
items just before it, for paging backwards).

A cursor need not be in the listing any more: the usual clean-up loop deletes as it pages, so
its next ``after_id`` names a deleted item. A listing that can say where any id of its kind
sorts (``place``: the key the listing is sorted by, descending) continues from where the
cursor would be; one that cannot (models) answers 400 naming the cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from switchyard.dialects._common import invalid

# Where an id sorts in a listing (newest first: descending), None for one it cannot place.
Place = Callable[[str], tuple[int, str] | None]

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def page(
    ids: Sequence[str],
    query: Mapping[str, str],
    render: Callable[[str], Any],
    noun: str,
    place: Place | None = None,
) -> dict[str, Any]:
    """One page of ``ids`` (in listing order), each item rendered by ``render``; ``place``:
    where any id sorts, when ``ids`` are in descending order of it (see the module doc).

    Raises:
        InvalidRequest: ``limit`` is not an integer from 1 to 1000, both cursors are given, or a
            cursor names no ``noun`` in the listing and ``place`` cannot place it.
    """
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise invalid("before_id", "give at most one of before_id and after_id")
    if after is not None:
        at, found = _position(ids, after, "after_id", noun, place)
        start = at + 1 if found else at
        chosen = ids[start : start + limit]
        has_more = start + limit < len(ids)
    elif before is not None:
        end, _ = _position(ids, before, "before_id", noun, place)
        chosen = ids[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        chosen = ids[:limit]
        has_more = limit < len(ids)
    return {
        "data": [render(i) for i in chosen],
        "has_more": has_more,
        "first_id": chosen[0] if chosen else None,
        "last_id": chosen[-1] if chosen else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    # isdecimal() first: int() also takes "²", "1_0" and " 7 ", and very long digit strings
    if len(raw) > 4 or not raw.isascii() or not raw.isdecimal():
        raise invalid("limit", f"must be an integer from 1 to {MAX_LIMIT} (got {raw[:20]!r})")
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"must be an integer from 1 to {MAX_LIMIT} (got {limit})")
    return limit


def _position(
    ids: Sequence[str], cursor: str, param: str, noun: str, place: Place | None
) -> tuple[int, bool]:
    """Where ``cursor`` is in ``ids``, and whether it is there: when it is not, the index it
    would have (the number of ids sorting before it)."""
    if cursor in ids:
        return ids.index(cursor), True
    mark = place(cursor) if place is not None else None
    if place is None or mark is None:
        raise invalid(
            param, f"no {noun} `{cursor[:256]}` in this listing (list again from the start)"
        )
    keys = (place(i) for i in ids)
    return sum(1 for key in keys if key is not None and key > mark), False
