"""What every server-zone process shares: connect as its identity, serve, stop in order.

:func:`serve_worker` is the whole life of a worker process: connect to NATS as the component's
identity, build the service, start it and its health endpoint, wait for SIGTERM, then stop in
order (stop taking work and finish what is in hand, stop the health endpoint, drain the
connection so replies in the buffer still go out). :class:`Endpoints` gives NATS micro services
their request handling: each request in its own tracked task, inside one error boundary that
answers with an OpenAI-shaped error and never lets an exception escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from nats.aio.client import Client as NATS
from nats.micro.request import Request

from switchyard.bus import headers as h
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.errors import ApiError
from switchyard.runtime.health import HealthServer
from switchyard.schemas.openai import error_body

log = logging.getLogger("switchyard.worker")

Handler = Callable[[Request], Awaitable[None]]


class Service(Protocol):
    """A worker's service: ready while serving; ``stop`` finishes work in hand."""

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


S = TypeVar("S", bound=Service)


async def serve_worker(
    settings: Settings,
    *,
    identity: str,
    instance: str,
    health_port: int | None,
    stop: asyncio.Event,
    build: Callable[[NATS], S],
    on_reconnect: Callable[[S], None] | None = None,
    metrics: Callable[[S], str] | None = None,
) -> None:
    """Run one worker until ``stop`` is set.

    Args:
        identity: the NATS identity (certificate) to connect as.
        build: makes the service from the connection.
        on_reconnect: told when NATS reconnected (e.g. to re-issue pull requests).
        metrics: Prometheus text for ``/metrics`` on the health port.
    """
    service: S | None = None

    async def reconnected() -> None:
        if service is not None and on_reconnect is not None:
            on_reconnect(service)

    nc = await connect(
        settings.nats_servers,
        settings.certs_dir,
        identity,
        name=instance,
        connect_timeout=settings.nats.connect_timeout_s,
        reconnect_wait=settings.nats.reconnect_wait_s,
        reconnected_cb=reconnected,
    )
    service = build(nc)
    running = service
    health = HealthServer(health_port, lambda: running.ready and nc.is_connected)
    if metrics is not None:
        health.metrics = lambda: metrics(running)
    try:
        await running.start()
        await health.start()
        log.info("%s %s serving", identity, instance)
        await stop.wait()
    finally:
        await running.stop(settings.stack.stop_timeout_s / 2)
        await health.stop()
        with contextlib.suppress(Exception):  # already closed or the server is gone
            await nc.drain()


class Endpoints:
    """Handlers of a NATS micro service, each request in a tracked task and one boundary.

    Args:
        name: for logs.
        translate: turns a domain error into the :class:`ApiError` to answer with, or None
            when it is not one it knows (it is then logged as an internal error).
    """

    def __init__(
        self, name: str, translate: Callable[[Exception], ApiError | None] | None = None
    ) -> None:
        self._name = name
        self._translate = translate
        self._tasks: set[asyncio.Task[None]] = set()

    def wrap(self, handler: Handler) -> Handler:
        async def start(req: Request) -> None:
            task = asyncio.create_task(self._boundary(handler, req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return start

    async def _boundary(self, handler: Handler, req: Request) -> None:
        try:
            await handler(req)
        except ApiError as exc:
            await reply_error(req, exc)
        except Exception as exc:  # the error boundary: answer, log, keep serving
            known = self._translate(exc) if self._translate else None
            if known is not None:
                await reply_error(req, known)
                return
            # Logged without the request: it may carry a secret value.
            log.exception("internal error in the %s service on %s", self._name, req.subject)
            await reply_error(req, ApiError(f"internal error in the {self._name} service"))

    async def drain(self, grace: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)


async def reply_ok(req: Request, body: bytes) -> None:
    await req.respond(body, headers={h.STATUS: "200"})


async def reply_error(req: Request, exc: ApiError) -> None:
    await req.respond(error_body(exc), headers={h.STATUS: str(exc.status)})
