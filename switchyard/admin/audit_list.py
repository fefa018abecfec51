"""``GET /admin/v1/audit``: one page of the audit log the gateway holds, newest first.

A script pages with ``after`` (the ``last_seq`` of the page before) until ``has_more`` is
false. ``offset`` pages count from the newest entry, so every entry written while a script
paged (its own changes among them) moved the later ones on: the next page repeated entries
of the one before. An entry's stream sequence never changes and new entries get higher ones,
so a page after a sequence is the same however many are appended meanwhile. ``offset`` still
works (counted from the cursor when both are given), for callers written before it.

The pages cover the entries the gateway holds (the newest :data:`~.audit.KEEP`); the stream
keeps more (a million, 400 days). ``has_more: false`` is the end of what is held: with
``truncated: true`` older entries are in the stream (before ``oldest_seq``), so a script that
must read everything reads those with ``nats stream view AUDIT``.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams

from switchyard.admin.context import AdminContext
from switchyard.admin.queries import audit_query


def audit_list(c: AdminContext, params: QueryParams) -> dict[str, Any]:
    """The page ``params`` ask for: ``entries``, ``total`` (every entry the filters match),
    ``has_more`` and ``last_seq`` (the next page's ``after``; None for an empty page), and
    ``truncated`` with ``oldest_seq``: the stream keeps entries older than the ones the gateway
    holds (``truncated``: true), which ``total`` and ``has_more`` do not count."""
    page = c.audit_log.query(audit_query(params))
    return {
        "entries": [row.doc() for row in page.entries],
        "total": page.total,
        "has_more": page.more,
        "last_seq": page.entries[-1].seq if page.entries else None,
        "truncated": page.truncated,
        "oldest_seq": page.oldest_seq,
    }
