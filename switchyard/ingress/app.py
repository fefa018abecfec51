"""Build the ASGI app of an edge: the OpenAI routes, health, error shapes, and its lifespan.

The LLM routes are plain Starlette routes on the FastAPI app: they take the request and return a
response with no dependency resolution or model validation in between (the body is decoded once,
by msgspec, in the edge). FastAPI's machinery is kept for the management API the gateway adds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from nats.aio.client import Client as NATS
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.keys import KeyAdmin
from switchyard.admin.spend import SpendReader
from switchyard.admin.token import AdminAuth
from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.client import LLMClient
from switchyard.config import Settings
from switchyard.control.client import ControlClient
from switchyard.errors import ApiError, InvalidRequest, error_for_status
from switchyard.ingress.admin_api import AdminApi, AdminContext
from switchyard.ingress.edge import Edge
from switchyard.ingress.fastpath import FastPath
from switchyard.ingress.keyring import KeyRing
from switchyard.ingress.responses import error_response
from switchyard.limits.limiter import Limiter
from switchyard.secrets.admin import SecretsAdmin

log = logging.getLogger("switchyard.ingress")


def create_asgi(settings: Settings, kind: str) -> FastPath:
    """The ASGI entry point for ``kind``: the LLM fast path in front of the FastAPI app."""
    app = create_app(settings, kind)
    edge: Edge = app.state.edge
    return FastPath(edge, app)


def create_app(settings: Settings, kind: str) -> FastAPI:
    """The FastAPI app for ``kind`` (``tail`` or ``gateway``); its state holds the edge."""
    edge = Edge(settings)
    identity = identities.GATEWAY.name if kind == "gateway" else identities.TAIL.name

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(
            settings.nats_servers,
            settings.certs_dir,
            identity,
            name=f"{kind}",
            connect_timeout=settings.nats.connect_timeout_s,
            reconnect_wait=settings.nats.reconnect_wait_s,
        )
        client = LLMClient(
            nc,
            attempts=settings.ingress.retry_attempts,
            default_timeout=settings.ingress.default_deadline_s,
        )
        await client.start()
        keys = KeyRing(nc.jetstream(timeout=5))
        await keys.start()
        edge.client, edge.keys = client, keys
        edge.limiter = Limiter(settings)
        admin_nc = None
        if kind == "gateway":
            admin_nc, app.state.admin = await _admin_context(settings, client)
        log.info("%s ready with %d client keys", kind, len(keys))
        try:
            yield
        finally:
            edge.client = None
            context = app.state.admin
            app.state.admin = None
            if context is not None:
                await context.spend.close()
            if edge.limiter is not None:
                await edge.limiter.close()
                edge.limiter = None
            if admin_nc is not None:
                with contextlib.suppress(Exception):
                    await admin_nc.drain()
            await keys.stop()
            await client.close()
            with contextlib.suppress(Exception):
                await nc.drain()

    app = FastAPI(
        title=f"Switchyard {kind}",
        description="OpenAI-compatible LLM gateway",
        lifespan=lifespan,
        docs_url="/docs" if kind == "gateway" else None,
        redoc_url=None,
        openapi_url="/openapi.json" if kind == "gateway" else None,
    )
    router = app.router
    # The LLM POST routes are served by FastPath before the app is reached (see fastpath.py).
    router.add_route("/v1/models", edge.list_models, methods=["GET"])
    router.add_route("/v1/models/{model:path}", edge.get_model, methods=["GET"])
    # The OpenAI SDK may be configured with or without the /v1 prefix in base_url.
    router.add_route("/models", edge.list_models, methods=["GET"])
    router.add_route("/health", edge.health, methods=["GET"])
    router.add_route("/ready", edge.ready, methods=["GET"])
    app.state.edge = edge
    app.state.admin = None
    if kind == "gateway":
        app.include_router(AdminApi(app).router())
    _error_handlers(app)
    return app


async def _admin_context(settings: Settings, client: LLMClient) -> tuple[NATS, AdminContext]:
    """The gateway's management side: a second connection, as the admin identity, so that
    management reaches the server zone only through the admin-only exports."""
    admin_nc = await connect(
        settings.nats_servers,
        settings.certs_dir,
        identities.ADMIN.name,
        name="gateway-admin",
        connect_timeout=settings.nats.connect_timeout_s,
        reconnect_wait=settings.nats.reconnect_wait_s,
    )
    context = AdminContext(
        auth=AdminAuth(settings.admin_token_file),
        control=ControlClient(admin_nc, actor="gateway-api"),
        secrets=SecretsAdmin(admin_nc, actor="gateway-api"),
        llm=client,
        keys=KeyAdmin(admin_nc.jetstream(timeout=10)),
        spend=SpendReader(settings),
    )
    return admin_nc, context


def _error_handlers(app: FastAPI) -> None:
    """Every error a client can see is OpenAI-shaped, including routing and framework errors."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = error_for_status(exc.status_code, str(exc.detail))
        if exc.status_code == 404:
            err.code = "not_found"
            err.message = f"Unknown path {request.url.path}"
        elif exc.status_code == 405:
            err.code = "method_not_allowed"
            err.type = "invalid_request_error"
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(InvalidRequest(str(first.get("msg", "invalid request")), param=where))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(ApiError("internal error in the gateway"))
