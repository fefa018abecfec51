"""The gateway's API docs page (Swagger UI), with its assets served by the gateway itself.

FastAPI's default page loads Swagger UI from a CDN, so with no internet (the platform needs
none at run time) ``/docs`` was a blank page. The assets come from the ``fastapi-offline``
package's copy of Swagger UI 5 (OpenAPI 3.1, which our ``/openapi.json`` is).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from switchyard.runtime import forwarded

ASSETS = "/docs/assets"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def assets_dir() -> Path:
    """Where the installed Swagger UI files are."""
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _headers(html: bytes) -> dict[str, str]:
    """The page's own security headers, as the admin UI's (it shares the gateway's origin):
    its one inline script allowed by hash, no framing, no other origin."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    policy = (
        "default-src 'self'; "
        f"script-src 'self' {hashes}; "
        "style-src 'self' 'unsafe-inline'; "  # Swagger UI styles its elements inline
        "img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }


def docs_routes(title: str, openapi_url: str) -> list[BaseRoute]:
    """``GET /docs`` and its assets under :data:`ASSETS`. The page names the schema and its
    assets under the path prefix the client reached the edge under (``ingress.<edge>.root_path``:
    at the host's root, behind a proxy serving ``/sy``, the browser fetched ``/openapi.json``
    and the assets from the host's root, outside the gateway); one page per prefix, built once."""
    pages: dict[str, HTMLResponse] = {}

    def page_for(prefix: str) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=prefix + openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{prefix}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{prefix}{ASSETS}/favicon.png",
            # No badge from validator.swagger.io: no request leaves the gateway (nor may, by CSP).
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(_headers(bytes(page.body)))
        return page

    async def docs(request: Request) -> HTMLResponse:
        prefix = forwarded.root_path(request)
        page = pages.get(prefix)
        if page is None:
            page = pages[prefix] = page_for(prefix)
        return page

    return [
        Route("/docs", docs, methods=["GET"], name="docs"),
        Mount(ASSETS, app=StaticFiles(directory=assets_dir()), name="docs-assets"),
    ]
