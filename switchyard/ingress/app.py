"""Build the ASGI app of an edge: the OpenAI routes, health, error shapes, and its lifespan.

The LLM POST routes are served by :class:`~switchyard.ingress.fastpath.FastPath` in front of
the FastAPI app (raw ASGI, body decoded once by msgspec); the app itself serves models, health
and readiness, and whatever a process mounts on it through :class:`EdgePlugin` (the gateway
mounts the management API and admin web app; see :mod:`switchyard.apps.gateway`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol
from urllib.parse import quote

import nats.errors
import nats.js.errors
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from switchyard import __version__
from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.client import LLMClient
from switchyard.config import Settings
from switchyard.dialects import anthropic
from switchyard.errors import (
    ApiError,
    BusError,
    InvalidRequest,
    ObjectDamaged,
    ServiceUnavailable,
    error_for_status,
)
from switchyard.ingress import openapi
from switchyard.ingress.alias_watch import AliasWatch
from switchyard.ingress.batches import BatchApi, by_path
from switchyard.ingress.cors import Cors, with_cors
from switchyard.ingress.docs import docs_routes
from switchyard.ingress.edge import Edge
from switchyard.ingress.fastpath import ANTHROPIC_OPS, ROUTES, FastPath
from switchyard.ingress.keyring import KeyRing
from switchyard.ingress.message_batches import MessageBatchApi
from switchyard.ingress.metrics import EdgeMetrics
from switchyard.ingress.responses import dialect_error
from switchyard.ingress.root_path import RootPath, with_root_path
from switchyard.limits.limiter import Limiter
from switchyard.runtime import forwarded
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.cert_expiry import export_certificate_expiry
from switchyard.runtime.metrics import CONTENT_TYPE, Metrics, count_reconnects
from switchyard.runtime.reporting import Reporter
from switchyard.runtime.shutdown import disconnect
from switchyard.runtime.trace_export import count_trace_exports
from switchyard.runtime.tracing import setup_tracing

log = logging.getLogger("switchyard.ingress")


class EdgePlugin(Protocol):
    """Something a process mounts on its edge app: routes, and a lifetime tied to the app's."""

    def routers(self) -> list[APIRouter]: ...

    async def start(
        self, llm: LLMClient, metrics: Metrics, *, batches: BatchStore | None = None
    ) -> None:
        """Called once the edge is connected; ``metrics`` is the process's registry,
        ``batches`` the Batch API's store on the edge's own connection."""

    async def stop(self) -> None: ...


def create_asgi(
    settings: Settings, kind: str, plugins: Sequence[EdgePlugin] = (), *, instance: str = ""
) -> FastPath | Cors | RootPath:
    """The ASGI entry point for ``kind``: the LLM fast path in front of the FastAPI app,
    CORS in front of both when ``ingress.cors_origins`` names any, and the edge's path
    prefix (``ingress.<kind>.root_path``) in front of all."""
    app = create_app(settings, kind, plugins, instance=instance)
    edge: Edge = app.state.edge
    entry = with_cors(FastPath(edge, app), settings.ingress.cors_origins)
    listen = settings.ingress.gateway if kind == "gateway" else settings.ingress.tail
    return with_root_path(entry, listen.root_path)


def create_app(  # noqa: PLR0915  (one app's routes and lifespan, in order)
    settings: Settings, kind: str, plugins: Sequence[EdgePlugin] = (), *, instance: str = ""
) -> FastAPI:
    """The FastAPI app for ``kind`` (``tail`` or ``gateway``); its state holds the edge."""
    edge = Edge(settings)
    identity = identities.GATEWAY.name if kind == "gateway" else identities.TAIL.name
    metrics = Metrics(kind)
    stats = edge.stats = EdgeMetrics(metrics)
    # The aliases of the table in this edge's own settings, until a head tells the live one:
    # an edge that no head ever answers (down since it started, or older) names them.
    stats.known(settings.route_table.routes)
    edge.tracing = setup_tracing(settings.telemetry, kind, instance or kind)
    count_trace_exports(metrics, edge.tracing.exports)
    batch_api = BatchApi(edge, settings.batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(
            settings.nats_servers,
            settings.certs_dir,
            identity,
            name=instance or kind,  # one connection name per replica, as workers have
            connect_timeout=settings.nats.connect_timeout_s,
            reconnect_wait=settings.nats.reconnect_wait_s,
        )
        client = LLMClient(
            nc,
            attempts=settings.ingress.retry_attempts,
            default_timeout=settings.ingress.default_deadline_s,
            max_unread_bytes=settings.ingress.max_unread_bytes,
            max_answer_bytes=settings.ingress.max_answer_bytes,
        )
        await client.start()
        keys = KeyRing(nc.jetstream(timeout=5), on_refused=edge.waiting.refuse)
        await keys.start()
        edge.client, edge.keys = client, keys
        if (ceiling := edge.bus_ceiling_note()) is not None:
            log.warning("%s", ceiling)
        batch_api.store = BatchStore(nc)
        edge.limiter = Limiter(settings, metrics)
        count_reconnects(metrics, nc)
        export_certificate_expiry(metrics, settings.certs_dir, identity)
        stats.watch(client)  # its reply backlog
        aliases = AliasWatch(client, stats.known)  # their series at 0 before their requests
        aliases.start()
        reporter = Reporter(
            nc,
            kind,
            instance or kind,
            lambda: edge.client is not None,
            requests=lambda: dict(edge.stats.by_class) if edge.stats else {},
        )
        reporter.start()
        started: list[EdgePlugin] = []
        log.info("%s ready with %d client keys", kind, len(keys))
        try:
            for plugin in plugins:
                await plugin.start(client, metrics, batches=batch_api.store)
                started.append(plugin)
            yield
        finally:
            edge.client = None
            await aliases.stop()
            await reporter.stop()
            for plugin in reversed(started):
                await plugin.stop()
            if edge.limiter is not None:
                await edge.limiter.close()
                edge.limiter = None
            await edge.tasks.cancel_all()
            await keys.stop()
            await client.close()
            edge.tracing.shutdown()
            await disconnect(nc)

    app = FastAPI(
        title=f"Switchyard {kind}",
        description="OpenAI-compatible LLM gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # the gateway's own page, below: FastAPI's needs a CDN
        redoc_url=None,
        openapi_url=None,  # served below, under the edge's path prefix
    )
    # Starlette's own trailing-slash redirect names the path without the edge's path prefix
    # (ingress.<kind>.root_path): the 404 handler redirects instead (see _slash_twin).
    app.router.redirect_slashes = False
    routes = app.router.routes
    # Both edges publish their API (the LLM routes described by ingress.openapi).
    routes.append(
        NamedRoute(
            OPENAPI_URL, openapi.schema_endpoint(app), methods=["GET"], include_in_schema=False
        )
    )
    if kind == "gateway":
        routes.extend(docs_routes(app.title, OPENAPI_URL))
    # The LLM POST routes are served by FastPath before the app is reached (see fastpath.py).
    routes.append(NamedRoute("/v1/models", edge.list_models, methods=["GET"]))
    routes.append(NamedRoute("/v1/models/{model:path}", edge.get_model, methods=["GET"]))
    # The OpenAI SDK may be configured with or without the /v1 prefix in base_url.
    routes.append(NamedRoute("/models", edge.list_models, methods=["GET"]))
    routes.append(NamedRoute("/health", edge.health, methods=["GET"]))
    routes.append(NamedRoute("/ready", edge.ready, methods=["GET"]))
    # The OpenAI Batch API and Anthropic's batches: one route per path (a 405's Allow names
    # every method of its path).
    for path, methods, endpoint in by_path(batch_api.routes()):
        routes.append(NamedRoute(path, endpoint, methods=methods))
    for path, methods, endpoint in by_path(MessageBatchApi(batch_api).routes()):
        routes.append(NamedRoute(path, endpoint, methods=methods))

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes.append(NamedRoute("/metrics", metrics_text, methods=["GET"]))
    app.state.edge = edge
    for plugin in plugins:
        for extra in plugin.routers():
            app.include_router(extra)
    _error_handlers(app, lambda path: unknown_path(path, kind, settings))
    openapi.install(app)
    return app


OPENAPI_URL = "/openapi.json"
# Paths only the gateway serves, and what is there (a 404 on the tail says where they are).
GATEWAY_ONLY = {"/admin": "the admin API", "/ui": "the admin web app", "/docs": "the API docs"}


def unknown_path(path: str, kind: str, settings: Settings) -> str:
    """The 404's message for ``path``: on the tail, a path the gateway serves says so, with
    the gateway's port from the settings, never its host (the tail faces clients; where the
    gateway listens inside a network is not theirs to learn from a 404)."""
    message = f"Unknown path {path}"
    roots = (root for root in GATEWAY_ONLY if path == root or path.startswith(f"{root}/"))
    root = next(roots, None)
    if kind != "tail" or root is None:
        return message
    port = settings.ingress.gateway.port
    where = f"the gateway (port {port})" if port else "the gateway"
    return f"{message}: {GATEWAY_ONLY[root]} is served by {where}, not by this edge (the tail)"


class NamedRoute(Route):
    """A plain route that names itself in the request scope, as FastAPI's routes do: the
    edge's HTTP metrics label a request with its route's template (``/v1/batches/{batch_id}``),
    and without this every route here was counted as ``_OTHER``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _error_handlers(app: FastAPI, unknown: Callable[[str], str]) -> None:
    """Every error a client can see is OpenAI-shaped, including routing and framework errors
    (Anthropic-shaped under ``/v1/messages``, whose clients are Anthropic's SDKs, and for any
    request that carries Anthropic's version header)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})  # a 405's Allow, from the router
        if exc.status_code == 404 and request.url.path in ROUTES:  # only POST reaches them
            err = error_for_status(
                405,
                f"{request.url.path} takes POST, not {request.method}",
                code="method_not_allowed",
                type="invalid_request_error",
            )
            headers["allow"] = "POST"
        elif exc.status_code == 404 and (twin := _slash_twin(request, app.router.routes)):
            return RedirectResponse(twin, status_code=307)
        elif exc.status_code == 404:
            err = error_for_status(404, unknown(request.url.path), code="not_found")
        elif exc.status_code == 405:
            err = error_for_status(
                405,
                str(exc.detail),
                code="method_not_allowed",
                type="invalid_request_error",
            )
        else:
            err = error_for_status(exc.status_code, str(exc.detail))
        response = _error(request, err)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(
            request, InvalidRequest(str(first.get("msg", "invalid request")), param=where)
        )

    @app.exception_handler(ObjectDamaged)
    async def damaged(request: Request, exc: ObjectDamaged) -> Response:
        log.error("%s: %s", request.url.path, exc)
        return _error(request, ApiError(f"the stored bytes are damaged: {exc}"))

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        # JetStream did not answer, or the connection is down: worth a retry. (Other nats
        # errors are bugs or conflicts, and stay 500s with their traceback.)
        log.warning("%s: the store did not answer: %r", request.url.path, exc)
        return _error(request, ServiceUnavailable("the gateway's store did not answer; try again"))

    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, store_unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(request, ApiError("internal error in the gateway"))


# What means "the store (JetStream) cannot answer now", not "this call is wrong".
UNAVAILABLE: tuple[type[Exception], ...] = (
    BusError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


def _slash_twin(request: Request, routes: Sequence[BaseRoute]) -> str | None:
    """Where a path no route matched goes when its twin with a trailing slash added or
    dropped has a route (``/health/`` -> ``/health``), as Starlette's redirect did, with the
    edge's path prefix in front (``/sy/health``; Starlette's named the host's root, and behind a
    proxy keeping the prefix the client left the gateway) and the query kept. A path only:
    the client resolves it against the URL it asked, through the proxy or not."""
    scope = request.scope
    path: str = scope["path"]
    if path == "/" or "endpoint" in scope:  # a route took it, and its endpoint said 404
        return None
    twin = _toggle_slash(path)
    moved = {**scope, "path": twin}
    if not any(route.matches(moved)[0] is not Match.NONE for route in routes):
        return None
    raw = scope.get("raw_path")
    written = raw.decode("latin-1") if isinstance(raw, bytes) else quote(path)
    written = _toggle_slash(written)
    if written.startswith("//"):  # another host's, to a browser: never
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return forwarded.root_path(request) + written + (f"?{query}" if query else "")


def _toggle_slash(path: str) -> str:
    """``path`` with its trailing slash dropped, or one added."""
    return (path.rstrip("/") or "/") if path.endswith("/") else path + "/"


def _error(request: Request, err: ApiError) -> Response:
    """``err`` in OpenAI's shape, or in Anthropic's for an Anthropic client (one of its paths,
    or a request with its version header): its SDK reads only that."""
    anthropic_client = (
        _anthropic_path(request.url.path) or anthropic.VERSION_HEADER in request.headers
    )
    return dialect_error(err, as_anthropic=anthropic_client)


def _anthropic_path(path: str) -> bool:
    """Paths of Anthropic's Messages API (the fast path's ``messages`` and ``count_tokens``
    routes and anything under them, like its message batches): their errors go out in
    Anthropic's shape."""
    return any(
        path == route or path.startswith(route + "/")
        for route, (op, _) in ROUTES.items()
        if op in ANTHROPIC_OPS
    )
