"""The model listing in Anthropic's shape, for ``GET /v1/models`` from an Anthropic client.

Anthropic's SDKs (and agents built on them) list models at the same path as OpenAI's, and tell
themselves apart by the ``anthropic-version`` header they always send. Anthropic's listing is a
page: ``{"data": [...], "has_more", "first_id", "last_id"}``, each model
``{"type": "model", "id", "display_name", "created_at", ...}``, paged with ``limit`` (1-1000,
default 20), ``after_id`` and ``before_id``. The gateway knows no release dates, so
``created_at`` is the epoch, which Anthropic documents for an unknown date, and every model it
routes is ``active``. The order is the gateway's own listing order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from switchyard.dialects._common import encode, invalid

VERSION_HEADER = "anthropic-version"
_EPOCH = "1970-01-01T00:00:00Z"
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 1000


def model_info(model_id: str) -> dict[str, Any]:
    """One model as Anthropic describes it."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": _EPOCH,
        "lifecycle": "active",
    }


def model_body(model_id: str) -> bytes:
    """The body of ``GET /v1/models/{id}``."""
    return encode(model_info(model_id))


def page_body(ids: Sequence[str], query: Mapping[str, str]) -> bytes:
    """The body of ``GET /v1/models``: one page of ``ids`` chosen by the query string.

    Raises:
        InvalidRequest: ``limit`` is not an integer from 1 to 1000, both cursors are given, or a
            cursor names a model not in the listing.
    """
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise invalid("before_id", "give at most one of before_id and after_id")
    if after is not None:
        start = _position(ids, after, "after_id") + 1
        chosen = ids[start : start + limit]
        has_more = start + limit < len(ids)
    elif before is not None:
        end = _position(ids, before, "before_id")
        chosen = ids[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        chosen = ids[:limit]
        has_more = limit < len(ids)
    return encode(
        {
            "data": [model_info(i) for i in chosen],
            "has_more": has_more,
            "first_id": chosen[0] if chosen else None,
            "last_id": chosen[-1] if chosen else None,
        }
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return _DEFAULT_LIMIT
    # isdecimal() first: int() also takes "²", "1_0" and " 7 ", and very long digit strings
    if len(raw) > 4 or not raw.isascii() or not raw.isdecimal():
        raise invalid("limit", f"must be an integer from 1 to {_MAX_LIMIT} (got {raw[:20]!r})")
    limit = int(raw)
    if not 1 <= limit <= _MAX_LIMIT:
        raise invalid("limit", f"must be an integer from 1 to {_MAX_LIMIT} (got {limit})")
    return limit


def _position(ids: Sequence[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise invalid(
            param, f"no model `{cursor[:256]}` in this listing (list again from the start)"
        ) from None
