"""``GET /admin/v1/keys``: one page of the gateway's key index, with each key's spend.

A script pages with ``after`` (the ``last_id`` of the page before) until ``has_more`` is
false. ``offset`` pages count from the newest key, so a key created while a script paged moved
every later key one place on: the next page repeated the last key of the one before, and a
script that created a key for each page it read never reached the end. Deleting what was read
moved them back, past keys never listed. A cursor names a place in the list (that of a deleted
key too, see :meth:`KeyIndex.place`), which neither moves.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams

from switchyard.admin.context import AdminContext
from switchyard.admin.keys import public_record
from switchyard.admin.queries import key_query
from switchyard.admin.spend import SpendUnavailable
from switchyard.errors import InvalidRequest


async def key_list(c: AdminContext, params: QueryParams) -> dict[str, Any]:
    """The page ``params`` ask for: ``keys``, ``total``, ``count``, ``has_more``, ``last_id``
    (and ``spend_unavailable`` while Valkey cannot be read)."""
    q = key_query(params)
    after = c.index.place(q.after) if q.after else None
    if q.after and after is None:
        raise InvalidRequest(
            f"`after` names no key this gateway knows (`{q.after}`): give the `last_id` of the "
            "page before, or leave it out to start from the newest key",
            param="after",
        )
    page = c.index.search(
        q.q,
        state=q.state,
        owner=q.owner,
        team=q.team,
        name=q.name,
        offset=q.offset,
        limit=q.limit,
        after=after,
    )
    doc: dict[str, Any] = {
        "total": page.total,
        "count": page.count,
        "has_more": page.more,
        "last_id": page.keys[-1].id if page.keys else None,
    }
    try:
        spend = await c.spend.for_keys(page.keys)
    except SpendUnavailable as exc:
        # Keys live in NATS, spend in Valkey: during a Valkey outage an operator can still
        # find (and revoke) a key, and is told why its spend is missing.
        doc["keys"] = [{**public_record(r), "spend": None} for r in page.keys]
        return {**doc, "spend_unavailable": exc.message}
    keys = [public_record(r, s) for r, s in zip(page.keys, spend, strict=True)]
    return {"keys": keys, **doc}
