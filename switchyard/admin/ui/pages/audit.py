"""The audit log: who changed what, when, through which door; filtered and paged on the server,
and downloaded as JSON Lines with the same filters."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import Response

from switchyard.admin.audit import AuditQuery
from switchyard.admin.audit_export import export_response
from switchyard.admin.read_slots import EXPORT
from switchyard.admin.token import Role
from switchyard.admin.ui.context import Route, Ui


async def audit_page(ui: Ui) -> Response:
    query = AuditQuery(
        q=ui.query("q"),
        kind=ui.query("kind"),
        via=ui.query("via"),
        offset=ui.int_query("offset", 0),
        limit=ui.int_query("limit", 50, 1, 500),
    )
    page = ui.admin.audit_log.query(query)
    qs = urlencode(
        {k: v for k, v in (("q", query.q), ("kind", query.kind), ("via", query.via)) if v}
    )
    return ui.page(
        "audit.html",
        "audit",
        "Audit log",
        page=page,
        query=query,
        base=ui.root + "/ui/audit?" + (qs + "&" if qs else ""),
        download=ui.root + "/ui/audit/export" + ("?" + qs if qs else ""),
    )


async def audit_download(ui: Ui) -> Response:
    """**Download**: every entry the page's filters match, oldest first, as JSON Lines (the
    file ``GET /admin/v1/audit/export`` gives)."""
    query = AuditQuery(q=ui.query("q"), kind=ui.query("kind"), via=ui.query("via"))
    role = Role.READ_ONLY if ui.session.read_only else Role.ADMIN
    return export_response(ui.admin.audit_log, query, ui.admin.reads.hold(EXPORT, role))


ROUTES: list[Route] = [("/audit", "GET", audit_page), ("/audit/export", "GET", audit_download)]
