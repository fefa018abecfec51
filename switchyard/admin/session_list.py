"""Who is signed in to the web app, and "sign out everywhere": ``/admin/v1/sessions`` and the
Sessions page (``/ui/sessions``).

A session is listed by its role (``admin`` or ``read-only``: the token it signed in with), the
name given at sign-in, the address it signed in from, and when it signed in and was last used;
never its cookie (the store keeps only the cookie's digest, and lists no digest either).

Sessions are shared by every gateway replica (the ``sy_admin_sessions`` bucket, followed live
by each: :mod:`switchyard.admin.ui.session_share`), so the list is every replica's, whichever
answers, and ending a role's sessions ends them on every replica within a moment (each answer
still names the replica that gave it: ``gateway``). API calls made with a token are no
sessions: only rotating the token stops those.

A replica that could not follow the bucket at start keeps its sessions to itself (it logs an
error); there, the answers say so (``shared``: false), and so do the audit entry and the
page's message of a sign-out, which then ends only that replica's sessions.

Signing out everywhere needs the admin token (a read-only caller gets 403
``admin_read_only``, as for every change) and is audited (``session.signout_all``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.bodies import decode
from switchyard.admin.context import AdminContext
from switchyard.runtime.http import JSON
from switchyard.runtime.request_body import read_body

if TYPE_CHECKING:
    from switchyard.admin.ui.sessions import Session

RoleName = Literal["admin", "read-only"]
ROLES: dict[str, bool] = {"admin": False, "read-only": True}  # role -> Session.read_only
ACTION = "session.signout_all"
MAX_BODY_BYTES = 1024  # {"role": "read-only"} and room to spare; 413 past it
_ENCODE = msgspec.json.Encoder()


class SignOutBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/v1/sessions/signout``: whose sessions to end."""

    role: RoleName


def role_name(session: Session) -> RoleName:
    return "read-only" if session.read_only else "admin"


def session_doc(session: Session) -> dict[str, Any]:
    """One session as the API and the page show it (times: Unix seconds)."""
    return {
        "role": role_name(session),
        "name": session.actor,
        "address": session.source,
        "signed_in_at": session.created,
        "last_seen_at": session.last_seen,
    }


def shared(c: AdminContext) -> bool:
    """Whether the sessions here are every replica's (shared through the bucket)."""
    return c.sessions is not None and c.sessions.shared


def reach(is_shared: bool) -> str:
    """Where a sign-out everywhere reached, as the audit entry and the page say it."""
    if is_shared:
        return "on every gateway replica"
    return (
        "on this gateway replica only (its sessions are not shared with the others: "
        "the sessions bucket could not be followed, see its log)"
    )


def live(c: AdminContext) -> list[Session]:
    """Every replica's live sessions (none where the API is mounted without its web app)."""
    return [] if c.sessions is None else c.sessions.live()


async def sign_out_all(
    c: AdminContext, role: RoleName, *, actor: str, source: str, via: Literal["ui", "api"]
) -> int:
    """Ends every ``role`` session, on every gateway replica (this one's only, where they are
    not shared: the entry says so), and records it; returns how many were live."""
    ended = 0 if c.sessions is None else await c.sessions.end_all(ROLES[role])
    where = f" (from gateway {c.instance})" if c.instance else ""
    detail = f"{ended} ended {reach(shared(c))}{where}"
    await c.audit.record(actor, ACTION, f"{role} sessions", detail, source=source, via=via)
    return ended


def _ok(doc: Any) -> Response:
    return Response(_ENCODE.encode(doc), media_type=JSON)


async def list_sessions(request: Request, c: AdminContext) -> Response:
    """``GET /admin/v1/sessions``: the live sessions (every replica's), oldest sign-in first."""
    docs = [session_doc(s) for s in live(c)]
    return _ok({"gateway": c.instance, "shared": shared(c), "sessions": docs})


async def sign_out_sessions(request: Request, c: AdminContext) -> Response:
    """``POST /admin/v1/sessions/signout`` ``{"role": "admin" | "read-only"}``."""
    body = decode(await read_body(request, MAX_BODY_BYTES), SignOutBody, "sign-out")
    source = c.proxies.audit_source(request.scope)
    ended = await sign_out_all(c, body.role, actor="admin token", source=source, via="api")
    return _ok({"gateway": c.instance, "shared": shared(c), "role": body.role, "ended": ended})


ENDPOINTS = [
    (
        "/sessions",
        "GET",
        "Web app sign-in sessions (shared by every gateway replica): role, name, address, "
        "signed in, last seen",
        list_sessions,
    ),
    (
        "/sessions/signout",
        "POST",
        "End every session of a role, on every gateway replica (body: role admin|read-only)",
        sign_out_sessions,
    ),
]
BODIES: dict[str, Any] = {"sign_out_sessions": SignOutBody}
