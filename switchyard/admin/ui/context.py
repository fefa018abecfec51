"""What a page handler gets: the request, the admin clients, the session, and helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from switchyard.admin.context import AdminContext
from switchyard.admin.ui.forms import Form
from switchyard.admin.ui.render import render
from switchyard.admin.ui.sessions import Session
from switchyard.runtime import forwarded


@dataclass
class Ui:
    request: Request
    admin: AdminContext
    session: Session
    form: Form  # the posted form (empty for GET)

    @property
    def root(self) -> str:
        """The path prefix the browser reaches the gateway under ("" at the host's root):
        every URL a page or redirect gives starts with it (``ingress.<edge>.root_path``)."""
        return forwarded.root_path(self.request)

    def page(self, template: str, active: str, title: str, **values: Any) -> HTMLResponse:
        html = render(
            template,
            root=self.root,
            active=active,
            title=title,
            session=self.session,
            csrf=self.session.csrf,
            flashes=self.session.take_flashes(),
            **values,
        )
        return HTMLResponse(html, status_code=values.get("status", 200))

    def redirect(self, url: str, flash: tuple[str, str] | None = None) -> Response:
        if flash is not None:
            self.session.flash(*flash)
        return RedirectResponse(self.root + url if url.startswith("/") else url, status_code=303)

    @property
    def actor(self) -> str:
        """How the admin services name this person in their own logs."""
        return f"{self.session.actor} (ui)"

    def query(self, name: str, default: str = "") -> str:
        return (self.request.query_params.get(name) or default).strip()

    def int_query(self, name: str, default: int, low: int = 0, high: int = 1_000_000) -> int:
        try:
            value = int(self.request.query_params.get(name) or default)
        except ValueError:
            value = default
        return max(low, min(high, value))

    async def audit(
        self, action: str, target: str = "", detail: str = "", *, ok: bool = True
    ) -> None:
        """An entry with the address of the request making the change (the session's
        sign-in address may be another: a laptop that moved, or a stolen cookie)."""
        source = self.admin.proxies.audit_source(self.request.scope)
        await self.admin.audit.record(
            self.session.actor, action, target, detail, ok=ok, source=source, via="ui"
        )


Handler = Callable[[Ui], Awaitable[Response]]
# (path under /ui, HTTP method, handler)
Route = tuple[str, str, Handler]
