"""The audit log as a file: every entry a filter matches, oldest first, as JSON Lines.

``GET /admin/v1/audit/export?q=&kind=&via=`` (the admin token) and the Audit page's
**Download** (``/ui/audit/export``, the web app's session) take the list's filters, without its
paging: one JSON object per line, each with the fields ``GET /admin/v1/audit`` gives an entry
(``seq``, the fields as written, ``stored``, ``ts_mismatch``). The entries are the ones the
gateway holds in memory (the newest 100,000; older ones: ``nats stream view AUDIT``), taken
when the request arrives, and written out in chunks as the client reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.audit import AuditLog, AuditQuery, AuditRow
from switchyard.admin.context import AdminContext
from switchyard.admin.queries import audit_query
from switchyard.admin.read_slots import EXPORT, HeldStream, role_of

MEDIA_TYPE = "application/jsonl"
_CHUNK = 500  # entries per chunk written (about 300 KB)
_ENCODE = msgspec.json.Encoder()


async def _lines(rows: Iterator[AuditRow]) -> AsyncIterator[bytes]:
    chunk: list[bytes] = []
    for row in rows:
        chunk.append(_ENCODE.encode(row.doc()) + b"\n")
        if len(chunk) >= _CHUNK:
            yield b"".join(chunk)
            chunk.clear()
            await asyncio.sleep(0)  # the loop's other work between chunks (sending may not wait)
    if chunk:
        yield b"".join(chunk)


def export_response(log: AuditLog, query: AuditQuery, held: Callable[[], None]) -> Response:
    """The matching entries as a JSON Lines download (``audit-<UTC time>.jsonl``); ``held``
    gives the export's slot back when it ends (:mod:`switchyard.admin.read_slots`)."""
    name = time.strftime("audit-%Y%m%dT%H%M%SZ.jsonl", time.gmtime())
    return HeldStream(
        _lines(log.matching(query)),
        held,
        media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def export_audit(request: Request, c: AdminContext) -> Response:
    """``GET /admin/v1/audit/export``: the filters of ``GET /admin/v1/audit``, every entry."""
    query = audit_query(request.query_params)
    return export_response(c.audit_log, query, c.reads.hold(EXPORT, role_of(request)))


ENDPOINT = (
    "/audit/export",
    "GET",
    "Every admin action the filter matches, oldest first, as JSON Lines (?q=&kind=&via=)",
    export_audit,
)
