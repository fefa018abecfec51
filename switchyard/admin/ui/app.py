"""The admin web app's router: sign-in, the session guard, CSRF, security headers, assets.

Every page and JSON call needs a live session (pages redirect to sign-in, JSON answers 401);
every POST needs the session's CSRF token (403 without). A form body longer than
:data:`~switchyard.admin.ui.forms.MAX_FORM_BYTES` (the sign-in form's: ``SIGNIN_FORM_BYTES``)
is refused with 413 before more of it is read. Responses carry a CSP that allows only this
site's own scripts and styles (no inline code), ``X-Frame-Options: DENY`` and
``Referrer-Policy: same-origin`` (nothing leaves the site); pages are never cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib.resources
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from switchyard.admin.access import read_only_refusal, route_path
from switchyard.admin.context import AdminContext
from switchyard.admin.token import Role
from switchyard.admin.ui import csrf
from switchyard.admin.ui.context import Handler, Ui
from switchyard.admin.ui.forms import SIGNIN_FORM_BYTES, Form
from switchyard.admin.ui.pages import ROUTES
from switchyard.admin.ui.render import render
from switchyard.admin.ui.sessions import COOKIE, SessionStore
from switchyard.admin.ui.signin_guard import (
    UNRECORDED_ACTOR,
    Record,
    SigninGuard,
    unrecorded_detail,
)
from switchyard.admin.ui.signin_rate import SigninRate
from switchyard.errors import ApiError, AuthenticationFailed, PayloadTooLarge, PermissionDenied
from switchyard.runtime import forwarded

log = logging.getLogger("switchyard.admin.ui")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chromium send `Origin: null`
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def _secured(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "public, max-age=300" if cache else "no-store"
    return response


def _over_tls(request: Request) -> bool:
    """Whether the browser reached us over TLS: directly, or through a proxy that ends TLS
    and says so (``X-Forwarded-Proto``). Trusting the header only ever adds ``Secure``."""
    return forwarded.over_tls(request)


SESSION_ENDED = (
    "Your session ended (signed out or timed out), so that was not "
    "saved. Sign in again to go back to the page, then send it again."
)
UNCHECKED = (
    "Your session could not be checked just now (the gateway's NATS connection did not "
    "answer), so nothing was done: reload the page, or go back and send it again, in a moment."
)
UNCHECKED_RETRY_S = 5  # the Retry-After of that answer: a quiet bucket is not asked for 10 s
READ_ONLY_DETAIL = "read-only admin token"  # the audit detail of a read-only sign-in and out
STALE_FORM = (
    "That page was opened before your latest sign-in (or in another session), so nothing was "
    "changed. Reload the page and try again."
)


def _back(request: Request) -> str:
    """The page of this site a form was sent from (its ``Referer``), to return to, without
    the path prefix (``ingress.gateway.root_path``); ``""`` when there is none (the sign-in then
    goes to the overview)."""
    referer = urlsplit(request.headers.get("referer", ""))
    root = forwarded.root_path(request)
    path = referer.path.removeprefix(root) if referer.path.startswith(root + "/") else ""
    if referer.netloc != request.headers.get("host", "") or not path.startswith("/ui/"):
        return ""
    if path.startswith("/ui/signin"):
        return ""
    return path + (f"?{referer.query}" if referer.query else "")


def _unchecked(wants_json: bool, signin_url: str) -> Response:
    """503 for a cookie this replica does not know and could not look up (the sessions'
    bucket did not answer): neither "signed out" (a form's work lost, a sign-in asked for
    by a session that is good on another replica) nor let in."""
    response: Response
    if wants_json:
        body = {"error": UNCHECKED, "status": 503}
        response = JSONResponse(body, status_code=503)
    else:
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Try again in a moment · Switchyard</title></head><body><main>"
            f'<p role="alert">{html.escape(UNCHECKED)}</p>'
            f'<p>Signed out, or never signed in here? <a href="{html.escape(signin_url)}">'
            "Sign in</a>.</p></main></body></html>"
        )
        response = HTMLResponse(page, status_code=503)
    response.headers["Retry-After"] = str(UNCHECKED_RETRY_S)
    return _secured(response)


def _stale_page(ui: Ui, back: str) -> Response:
    """A form whose CSRF token is not this session's: an old tab after a new sign-in."""
    return ui.page(
        "error.html",
        "",
        "Page out of date",
        error=PermissionDenied(STALE_FORM),
        back=ui.root + (back or "/ui/"),
        status=403,
    )


class AdminUi:
    """Mounts ``/ui/``; ``context`` gives the admin clients once the gateway has started."""

    def __init__(
        self, context: Callable[[], AdminContext | None], token_file: Path | None = None
    ) -> None:
        """``token_file``: where ``switchyard up`` wrote the admin token, shown on the sign-in
        page (None: not known, e.g. a token file mounted into a container)."""
        self._current = context
        self._token_command = f"cat {shlex.quote(str(token_file))}" if token_file else ""
        self.sessions = SessionStore()
        self.guard = SigninGuard()
        self.rate = SigninRate()  # right tokens: sign-ins a minute per address and per role
        self._rate_warned = -float("inf")
        self._summary_task: asyncio.Task[None] | None = None
        self._static = importlib.resources.files("switchyard.admin.ui") / "static"

    def routers(self) -> list[APIRouter]:
        router = APIRouter(include_in_schema=False)
        router.add_api_route("/ui", self._to_root, methods=["GET"])
        router.add_api_route("/ui/signin", self._signin_form, methods=["GET"])
        router.add_api_route("/ui/signin", self._signin, methods=["POST"])
        router.add_api_route(
            "/ui/signout", self._guarded(self._signout, "POST", read_only=True), methods=["POST"]
        )
        router.add_api_route("/ui/static/{name}", self._asset, methods=["GET"])
        for path, method, handler in ROUTES:
            router.add_api_route(f"/ui{path}", self._guarded(handler, method), methods=[method])
        return [router]

    async def _to_root(self, request: Request) -> Response:
        return _secured(RedirectResponse(forwarded.root_path(request) + "/ui/", status_code=308))

    async def _asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            return _secured(Response("not found", status_code=404))
        resource = self._static / name
        if not resource.is_file():
            return _secured(Response("not found", status_code=404))
        return _secured(
            Response(resource.read_bytes(), media_type=STATIC_TYPES[suffix]), cache=True
        )

    # ---- sign-in ----

    def _signin_page(
        self,
        request: Request,
        error: str = "",
        name: str = "",
        status: int = 200,
        next_url: str = "",
    ) -> Response:
        """``next_url``: the page to go to once signed in, without the path prefix."""
        html = render(
            "signin.html",
            root=forwarded.root_path(request),
            title="Sign in",
            error=error,
            name=name,
            next_url=next_url,
            token_command=self._token_command,
        )
        return _secured(HTMLResponse(html, status_code=status))

    async def _signin_form(self, request: Request) -> Response:
        with contextlib.suppress(ApiError):  # not checked now: the form, to sign in anew
            if await self.sessions.get(request.cookies.get(COOKIE)) is not None:
                return _secured(RedirectResponse(forwarded.root_path(request) + "/ui/", 303))
        return self._signin_page(request, next_url=request.query_params.get("next", ""))

    async def _signin(self, request: Request) -> Response:
        context = self._current()
        if context is None:
            return self._signin_page(
                request, "The gateway is still starting; try again.", status=503
            )
        if not csrf.same_origin(request):
            return _secured(Response("cross-site sign-in refused", status_code=403))
        try:
            form = await Form.read(request, SIGNIN_FORM_BYTES)
        except PayloadTooLarge:
            return self._signin_page(request, "That form is too large to be a sign-in.", status=413)
        name = form.get("name")[:80]
        token = form.raw("token").strip()
        if not name:
            return self._signin_page(
                request, "Enter your name: the audit log records it.", status=400
            )
        source = context.proxies.client(request.scope)
        try:
            # The right token always signs in (an address is shared); the read-only one too.
            role = context.auth.check(token)
        except AuthenticationFailed:
            await self._summarise()  # a window over: its summary before anything new
            wait = self.guard.wait_s(source)
            if wait:  # refused unrecorded: wrong tokens must not push real entries out
                self.guard.skip(source)
                self._summarise_later()
                return self._signin_page(
                    request,
                    "Too many wrong admin tokens from this address or its network; try again "
                    f"in {wait:.0f} s.",
                    name=name,
                    status=429,
                )
            blocked = self.guard.failed(source)
            verdict = self.guard.record(source)
            if verdict is Record.NO:
                self._summarise_later()
            else:
                detail = "wrong admin token"
                if blocked:
                    detail += "; address blocked for a while"
                if verdict is Record.LAST:
                    detail += "; more wrong tokens are counted, not recorded, this hour"
                    detail += " (one entry sums them up)"
                await context.audit.record(
                    name,
                    "session.signin",
                    "",
                    detail,
                    ok=False,
                    source=context.proxies.audit_source(request.scope),
                    via="ui",
                )
            return self._signin_page(
                request, "That admin token is not valid.", name=name, status=401
            )
        except ApiError as exc:
            return self._signin_page(request, exc.message, name=name, status=exc.status)
        now = time.time()
        wait = self.rate.take(source, role, now)
        if wait:  # no session, no entry: a flood of right tokens must not push them out
            if now - self._rate_warned >= 60.0:  # one line a minute, however many
                self._rate_warned = now
                log.warning("admin sign-ins past the limit refused (%s token)", role.value)
            page = self._signin_page(
                request, f"Too many sign-ins; try again in {wait:.0f} s.", name=name, status=429
            )
            page.headers["Retry-After"] = str(max(1, round(wait)))
            return page
        read_only = role is Role.READ_ONLY
        try:
            session_id, _ = await self.sessions.create(name, source, read_only=read_only)
        except ApiError as exc:  # the sessions' bucket did not answer: no session
            return self._signin_page(request, exc.message, name=name, status=exc.status)
        await context.audit.record(
            name,
            "session.signin",
            "",
            READ_ONLY_DETAIL if read_only else "",
            source=context.proxies.audit_source(request.scope),
            via="ui",
        )
        return _secured(self._cookie_set(request, session_id, form.get("next")))

    @staticmethod
    def _cookie_set(request: Request, session_id: str, target: str) -> Response:
        """The signed-in redirect to ``target`` (a page of the app, else the overview)."""
        if not target.startswith("/ui/") or target.startswith("//"):
            target = "/ui/"
        root = forwarded.root_path(request)
        response = RedirectResponse(root + target, status_code=303)
        # A browser-session cookie (no Max-Age): the server ends the session after IDLE_S
        # without a request or ABSOLUTE_S after sign-in. A Max-Age set once at sign-in made
        # the browser drop the cookie 8 hours after sign-in, however busy the admin was.
        response.set_cookie(
            COOKIE,
            session_id,
            path=f"{root}/ui",
            httponly=True,
            samesite="strict",
            secure=_over_tls(request),
        )
        return response

    def _summarise_later(self) -> None:
        """Write the recording window's summary when it ends (if no sign-in does it first)."""
        if self._summary_task is None or self._summary_task.done():
            self._summary_task = asyncio.create_task(self._summarise(wait=True))

    async def _summarise(self, wait: bool = False) -> None:
        """One audit entry for the wrong tokens the last recording window left unrecorded;
        waiting (``wait``), on to the end of every next window that counts some too: one
        opened while this task slept has no task of its own (:meth:`_summarise_later`)."""
        while True:
            if wait:
                await asyncio.sleep(self.guard.window_left() + 0.1)
            context = self._current()
            summary = self.guard.summary() if context is not None else None
            if context is not None and summary is not None:
                detail = unrecorded_detail(summary)
                await context.audit.record(
                    UNRECORDED_ACTOR, "session.signin", "", detail, ok=False, via="ui"
                )
            if not (wait and context is not None and self.guard.counting()):
                return

    async def stop(self) -> None:
        """Writes the summary of the wrong sign-ins counted and not recorded yet, its window
        cut short (the counts live in memory: a stop lost them), instead of waiting for the
        window's end. Idempotent."""
        task, self._summary_task = self._summary_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        context = self._current()
        summary = self.guard.summary(cut=True) if context is not None else None
        if context is not None and summary is not None:
            detail = unrecorded_detail(summary) + " (written as the gateway stopped)"
            await context.audit.record(
                UNRECORDED_ACTOR, "session.signin", "", detail, ok=False, via="ui"
            )

    async def _signout(self, ui: Ui) -> Response:
        await self.sessions.end(ui.request.cookies.get(COOKIE))
        await ui.audit("session.signout", detail=READ_ONLY_DETAIL if ui.session.read_only else "")
        response = RedirectResponse(f"{ui.root}/ui/signin", status_code=303)
        response.delete_cookie(COOKIE, path=f"{ui.root}/ui")
        return response

    # ---- the guard ----

    def _guarded(
        self, handler: Handler, method: str, *, read_only: bool = False
    ) -> Callable[[Request], object]:
        """``read_only``: a read-only session may send it though it is no GET (sign-out)."""

        async def guarded(request: Request) -> Response:
            wants_json = request.url.path.startswith("/ui/api/") or (
                "application/json" in request.headers.get("accept", "")
            )
            # A form a person sent (not the pages' scripts, which ask for JSON or send the
            # CSRF header): a refusal is a page to read, not raw JSON in the browser window.
            form_post = method != "GET" and not wants_json and csrf.HEADER not in request.headers
            try:
                session = await self.sessions.get(request.cookies.get(COOKIE))
            except ApiError:  # not known here, and the bucket did not answer: not "signed out"
                return _unchecked(
                    not form_post and (wants_json or method != "GET"),
                    f"{forwarded.root_path(request)}/ui/signin",
                )
            context = self._current()
            if session is None or context is None:
                if form_post:
                    return self._signin_page(
                        request, SESSION_ENDED, status=401, next_url=_back(request)
                    )
                if wants_json or method != "GET":
                    return _secured(JSONResponse({"error": "sign in first"}, status_code=401))
                url = f"{forwarded.root_path(request)}/ui/signin?next=" + quote(
                    request.url.path, safe="/"
                )
                return _secured(RedirectResponse(url, status_code=303))
            ui = Ui(request, context, session, Form({}))
            try:
                if session.read_only and not read_only:
                    refusal = read_only_refusal(method, route_path(request))
                    if refusal is not None:
                        raise refusal
                if method != "GET":
                    ui.form = await Form.read(request)  # 413 past MAX_FORM_BYTES
                    if not csrf.valid(request, session, ui.form.raw(csrf.FIELD) or None):
                        if form_post:
                            return _secured(_stale_page(ui, _back(request)))
                        return _secured(
                            JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
                        )
                response = await handler(ui)
            except ApiError as exc:
                if wants_json:
                    response = JSONResponse(
                        {"error": exc.message, "status": exc.status}, status_code=exc.status
                    )
                    if exc.retry_after is not None:  # e.g. too many live pages open at once
                        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
                else:
                    response = ui.page(
                        "error.html", "", "Something went wrong", error=exc, status=exc.status
                    )
            return _secured(response)

        return guarded
