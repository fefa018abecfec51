"""An edge served under a path prefix by a reverse proxy (``ingress.<edge>.root_path``).

The proxy usually strips the prefix (nginx's ``location /sy/ { proxy_pass http://gw/; }``);
one that keeps it (``proxy_pass http://gw;``) is served too: a path that starts with the
prefix loses it here, before any route or rule reads the path. Either way the request's
scope states the prefix (:data:`switchyard.runtime.forwarded.ROOT_PATH`), and the URLs the
edge writes back (the admin web app's links, redirects, cookie path and scripts' calls; a
message batch's ``results_url``) carry it, so the browser or SDK stays under the prefix.
The LLM API works with the prefix kept or stripped, and still at the root for clients that
reach the edge directly.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from switchyard.ingress.cors import Cors
from switchyard.ingress.edge import Edge
from switchyard.ingress.fastpath import FastPath
from switchyard.runtime.forwarded import ROOT_PATH


class RootPath:
    """The edge's ASGI app (with or without CORS) under ``prefix``."""

    def __init__(self, app: FastPath | Cors, prefix: str) -> None:
        self.app = app
        self.edge: Edge = app.edge
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope[ROOT_PATH] = self.prefix
        path: str = scope["path"]
        if path == self.prefix or path.startswith(self.prefix + "/"):
            scope["path"] = path[len(self.prefix) :] or "/"
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(self.prefix.encode()):
                scope["raw_path"] = raw[len(self.prefix) :] or b"/"
        await self.app(scope, receive, send)


def with_root_path(app: FastPath | Cors, prefix: str) -> FastPath | Cors | RootPath:
    """``app`` under ``prefix``; ``app`` itself when there is none (the hot path unchanged)."""
    return RootPath(app, prefix) if prefix else app
