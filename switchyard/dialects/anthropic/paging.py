"""Anthropic's cursor pages, shared by its model and message batch listings.

A page is ``{"data": [...], "has_more", "first_id", "last_id"}``, chosen by ``limit`` (1-1000,
default 20) and at most one of ``after_id`` (the items after that one) and ``before_id`` (the
items just before it, for paging backwards).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from switchyard.dialects._common import invalid

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def page(
    ids: Sequence[str], query: Mapping[str, str], render: Callable[[str], Any], noun: str
) -> dict[str, Any]:
    """One page of ``ids`` (in listing order), each item rendered by ``render``.

    Raises:
        InvalidRequest: ``limit`` is not an integer from 1 to 1000, both cursors are given, or a
            cursor names no ``noun`` in the listing.
    """
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise invalid("before_id", "give at most one of before_id and after_id")
    if after is not None:
        start = _position(ids, after, "after_id", noun) + 1
        chosen = ids[start : start + limit]
        has_more = start + limit < len(ids)
    elif before is not None:
        end = _position(ids, before, "before_id", noun)
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


def _position(ids: Sequence[str], cursor: str, param: str, noun: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise invalid(
            param, f"no {noun} `{cursor[:256]}` in this listing (list again from the start)"
        ) from None
