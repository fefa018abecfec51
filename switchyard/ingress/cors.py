"""CORS on the LLM API routes, for browser front ends that call an edge with a client key.

A browser asks before a cross-origin call with custom headers (``Authorization``,
``x-api-key``, a JSON body): an ``OPTIONS`` preflight naming the method and headers it wants,
and it lets the page read the answer only when it carries ``Access-Control-Allow-Origin``.
With ``ingress.cors_origins`` set, :class:`Cors` stands in front of the edge's ASGI app and,
on the LLM API's paths (``/v1/...``, and the unprefixed routes of :data:`ROUTES` and
``/models``):

* answers a preflight itself: 204 with the allowed origin, methods, the headers the browser
  asked for, and a max-age, or a 403 ``origin_not_allowed`` for an origin not in the list;
* adds ``Access-Control-Allow-Origin`` (with ``Vary: Origin``) and
  ``Access-Control-Expose-Headers`` (the headers SDKs read: request ids, rate limits,
  ``retry-after``, the deployment that answered) to every answer to an allowed origin: whole
  answers, streams and errors alike, since it adds them to the answer's start.

The edge's HTTP protocol (:mod:`.protocol`) answers a few requests before the app sees them
(a body that never completes: 408; a malformed one: 400); :func:`answer_headers` gives those
answers the same headers, so a browser page can read them too.

The admin API (``/admin``) and web app (``/ui``) are never touched: the web app has its own
same-origin rule (:mod:`switchyard.admin.ui.csrf`). No cookie is ever involved (keys travel in
headers), so credentials are never allowed. Without origins in the settings the edge is not
wrapped at all: the hot path does not change (see :func:`with_cors`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from typing import Any

from switchyard.errors import error_for_status
from switchyard.ingress.edge import Edge
from switchyard.ingress.fastpath import ROUTES, FastPath
from switchyard.schemas.openai import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ANY = "*"
METHODS = b"GET, POST, DELETE"
# Browsers cap it (Chromium at 2 hours): a page asks again at most this often per URL.
MAX_AGE_S = 7200
EXPOSED = b", ".join(
    (
        b"x-request-id",
        b"request-id",
        b"retry-after",
        b"x-should-retry",
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-tokens",
        b"x-switchyard-deployment",
        b"x-switchyard-attempts",
        b"x-switchyard-priority",
    )
)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110 5.1)
_UNPREFIXED = frozenset(path for path in ROUTES if not path.startswith("/v1/")) | {"/models"}


def api_path(path: str) -> bool:
    """Whether ``path`` is one of the LLM API's, which browsers may call across origins."""
    return path.startswith("/v1/") or path in _UNPREFIXED


class Cors:
    """The edge's ASGI app (:class:`FastPath`), with CORS on the LLM API's paths."""

    def __init__(self, app: FastPath, origins: tuple[str, ...]) -> None:
        self.app = app
        self.edge: Edge = app.edge
        self._any = ANY in origins
        self._origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        origin = asked = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                asked = value
        if origin is None:  # not a browser's cross-origin request
            await self.app(scope, receive, send)
            return
        allowed = self._any or origin.decode("latin-1") in self._origins
        if scope["method"] == "OPTIONS" and asked is not None:
            await self._preflight(scope, send, origin, allowed)
            return
        if not allowed:  # no CORS headers: the browser keeps the answer from the page
            await self.app(scope, receive, send)
            return
        added = [*self._allow(origin), (b"access-control-expose-headers", EXPOSED)]
        await self.app(scope, receive, _Added(send, added).send)

    def _allow(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return _allow(self._any, origin)

    async def _preflight(self, scope: Scope, send: Send, origin: bytes, allowed: bool) -> None:
        request_id = (b"x-request-id", self.edge.new_request_id().encode())
        if not allowed:
            err = error_for_status(
                403,
                f"this API does not accept browser requests from the origin "
                f"`{origin.decode('latin-1')}` (ingress.cors_origins)",
                code="origin_not_allowed",
            )
            body = error_body(err)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                request_id,
            ]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [
            *self._allow(origin),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-max-age", b"%d" % MAX_AGE_S),
            request_id,
        ]
        wanted = _requested_headers(scope["headers"])
        if wanted:
            headers.append((b"access-control-allow-headers", wanted))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def answer_headers(origins: Collection[str], scope: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The headers :class:`Cors` adds to an answer to ``scope``'s request (not a preflight),
    for an answer written without the app: none off the LLM API's paths, without an
    ``Origin``, or for an origin not in ``origins``."""
    path = scope.get("path")
    if not origins or not isinstance(path, str) or not api_path(path):
        return []
    origin = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value
    if origin is None:
        return []
    anyone = ANY in origins
    if not anyone and origin.decode("latin-1") not in origins:
        return []
    return [*_allow(anyone, origin), (b"access-control-expose-headers", EXPOSED)]


def _allow(anyone: bool, origin: bytes) -> list[tuple[bytes, bytes]]:
    if anyone:
        return [(b"access-control-allow-origin", b"*")]
    return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]


def _requested_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The headers a preflight asks to send, every one allowed: the edge reads the ones it
    knows (keys, ``anthropic-*``, ``x-stainless-*``, ids, deadlines) and ignores the rest, so
    refusing one would only break a page that adds its own. Only well-formed names return."""
    names = [
        name.strip().lower()
        for key, value in headers
        if key == b"access-control-request-headers"
        for name in value.split(b",")
    ]
    return b", ".join(name for name in names if _TOKEN.fullmatch(name))


class _Added:
    """``send`` with headers added to the answer's start. uvicorn's own ``send`` is a method
    of its request cycle, which :mod:`.onewrite` reaches through ``send.__self__`` (one write
    for a whole answer, a stream's last event past flow control): this object's ``transport``
    and ``flow`` are the cycle's, so that still works through it."""

    __slots__ = ("_cycle", "_extra", "_send")

    def __init__(self, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._extra = extra
        self._cycle: Any = getattr(send, "__self__", None)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), *self._extra]
            message = {**message, "headers": headers}
        await self._send(message)

    @property
    def transport(self) -> Any:
        return self._cycle.transport  # AttributeError when there is none: read as "none"

    @transport.setter
    def transport(self, value: Any) -> None:
        self._cycle.transport = value

    @property
    def flow(self) -> Any:
        return self._cycle.flow

    @flow.setter
    def flow(self, value: Any) -> None:
        self._cycle.flow = value


def with_cors(app: FastPath, origins: tuple[str, ...]) -> FastPath | Cors:
    """``app`` with CORS for ``origins``; ``app`` itself when there are none (nothing
    added to any request)."""
    return Cors(app, origins) if origins else app
