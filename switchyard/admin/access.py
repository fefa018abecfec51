"""Who may do what on ``/admin/v1`` and in the web app: the admin token everything, the
read-only token only what changes nothing and reveals no secret.

A read-only caller gets every ``GET`` (and ``HEAD``) of the management API and every page of
the web app; any other method is refused with 403 ``admin_read_only`` naming the request and
what it needed. No ``GET`` of either reveals a secret value or a client key's secret (secrets
are listed by metadata, keys by their last characters; a new key's secret is shown once, in
the answer to the ``POST`` that made it), so :data:`SECRET_READS` is empty: a route added
later that does reveal one is listed there and refused too.
"""

from __future__ import annotations

from starlette.requests import Request

from switchyard.admin.context import AdminContext
from switchyard.admin.token import Role
from switchyard.bus import headers as h
from switchyard.errors import PermissionDenied

READ_METHODS = frozenset({"GET", "HEAD"})
# (method, route path) of reads a read-only caller may not make: they reveal a secret.
SECRET_READS: frozenset[tuple[str, str]] = frozenset()
CODE = "admin_read_only"


def read_only_refusal(method: str, what: str) -> PermissionDenied | None:
    """The 403 for a read-only caller's ``method`` request of ``what`` (a route path, as
    ``/admin/v1/keys/{key_id}``), or None when a read-only caller may make it."""
    if method.upper() in READ_METHODS and (method.upper(), what) not in SECRET_READS:
        return None
    needs = "reveals a secret" if method.upper() in READ_METHODS else "changes the gateway"
    return PermissionDenied(
        f"{method.upper()} {what} {needs}: it needs the admin token, and this is the read-only "
        "admin token (it may look at everything and change nothing)",
        code=CODE,
    )


def route_path(request: Request) -> str:
    """The route's path template (``/admin/v1/keys/{key_id}``): names what was refused without
    echoing the ids in the request."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else request.url.path


def authorize(context: AdminContext, request: Request) -> Role:
    """Checks the bearer token of an ``/admin/v1`` call (wrong ones counted per address by the
    guard) and refuses a read-only caller what it may not do."""
    role = context.auth.check_from(
        h.bearer_token(request.headers.get("authorization")),
        lambda: context.proxies.client(request.scope),
    )
    request.state.admin_role = role  # for the bounds on long reads (read_slots.py)
    if role is Role.READ_ONLY:
        refusal = read_only_refusal(request.method, route_path(request))
        if refusal is not None:
            raise refusal
    return role
