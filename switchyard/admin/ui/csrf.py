"""CSRF protection: every state-changing request carries the session's token.

Forms send it as the hidden field ``csrf``; the page's scripts as the ``X-CSRF-Token`` header.
The session cookie is ``SameSite=Strict`` as well, and a request whose ``Origin`` names another
site is refused before the token is even compared.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from switchyard.admin.ui.sessions import Session

FIELD = "csrf"
HEADER = "x-csrf-token"


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


def valid(request: Request, session: Session, form_token: str | None) -> bool:
    """True when the request comes from this site and carries the session's token."""
    if not same_origin(request):
        return False
    given = request.headers.get(HEADER) or form_token or ""
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
