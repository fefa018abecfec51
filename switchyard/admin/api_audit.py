"""The audit entry of a change made through ``/admin/v1``."""

from __future__ import annotations

from starlette.requests import Request

from switchyard.admin.context import AdminContext


async def api_audit(
    c: AdminContext,
    request: Request,
    action: str,
    target: str,
    detail: str = "",
    *,
    ok: bool = True,
) -> None:
    """Record an API change; the API's only credential is the shared admin token."""
    source = c.proxies.audit_source(request.scope)
    await c.audit.record("admin token", action, target, detail, ok=ok, source=source, via="api")
