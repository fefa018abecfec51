"""CSRF protection: every state-changing request carries the session's token.

Forms send it as the hidden field ``csrf``; the page's scripts as the ``X-CSRF-Token`` header.
The session cookie is ``SameSite=Strict`` as well, and a request whose ``Origin`` names another
site is refused before the token is even compared.

"This site" is the ``Host`` the request came with or, behind a reverse proxy that rewrites
``Host`` (nginx does by default), the scheme and host the proxy says the browser used
(``X-Forwarded-Proto``/``X-Forwarded-Host``, read and validated as everywhere else:
:mod:`switchyard.runtime.forwarded`). A browser cannot add those headers to a cross-site
request, and a foreign ``Origin`` matches neither.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from switchyard.admin.ui.sessions import Session
from switchyard.runtime import forwarded

FIELD = "csrf"
HEADER = "x-csrf-token"
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _site(scheme: str, netloc: str) -> tuple[str, str]:
    """(scheme, host[:port]) lowercased, without the scheme's default port (browsers leave it
    out of ``Origin``; a proxy may write it into ``X-Forwarded-Host``)."""
    scheme, netloc = scheme.lower(), netloc.lower()
    return scheme, netloc.removesuffix(_DEFAULT_PORTS.get(scheme, "\0"))


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    if parts.netloc == request.headers.get("host", ""):
        return True
    proxied = forwarded.host(request)
    if proxied is None:
        return False
    return _site(parts.scheme, parts.netloc) == _site(forwarded.scheme(request), proxied)


def valid(request: Request, session: Session, form_token: str | None) -> bool:
    """True when the request comes from this site and carries the session's token."""
    if not same_origin(request):
        return False
    given = request.headers.get(HEADER) or form_token or ""
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
