"""Sessions: who is signed in to the web app, and "sign out everywhere" per role (the admin
token's sessions, or the read-only token's; admin only, audited). What is listed and ended is
every gateway replica's (:mod:`switchyard.admin.session_list`)."""

from __future__ import annotations

from starlette.responses import Response

from switchyard.admin.session_list import (
    ROLES,
    RoleName,
    live,
    reach,
    session_doc,
    shared,
    sign_out_all,
)
from switchyard.admin.ui.context import Route, Ui
from switchyard.admin.ui.sessions import COOKIE
from switchyard.errors import InvalidRequest


async def sessions_page(ui: Ui) -> Response:
    sessions = live(ui.admin)
    rows = [(session_doc(s), s is ui.session) for s in sessions]
    counts = {role: sum(s.read_only == ro for s in sessions) for role, ro in ROLES.items()}
    return ui.page(
        "sessions.html",
        "sessions",
        "Sessions",
        rows=rows,
        counts=counts,
        gateway=ui.admin.instance,
        shared=shared(ui.admin),
    )


async def sign_out_role(ui: Ui) -> Response:
    """**Sign out every admin / read-only session**, on every replica; one's own too (then the
    sign-in page)."""
    role = ui.form.get("role")
    if role not in ROLES:
        raise InvalidRequest("role must be admin or read-only", param="role")
    chosen: RoleName = "admin" if role == "admin" else "read-only"
    source = ui.admin.proxies.audit_source(ui.request.scope)
    ended = await sign_out_all(ui.admin, chosen, actor=ui.session.actor, source=source, via="ui")
    if ui.session.ended:  # signed out with the rest
        response = ui.redirect("/ui/signin")
        response.delete_cookie(COOKIE, path=f"{ui.root}/ui")
        return response
    said = (
        f"{ended} {role} session{'' if ended == 1 else 's'} signed out, {reach(shared(ui.admin))}."
    )
    return ui.redirect("/ui/sessions", flash=("ok" if shared(ui.admin) else "error", said))


ROUTES: list[Route] = [
    ("/sessions", "GET", sessions_page),
    ("/sessions/signout", "POST", sign_out_role),
]
