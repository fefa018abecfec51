"""Run an edge under uvicorn (uvloop + httptools) until SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import uvicorn

from switchyard.config import Settings
from switchyard.ingress.app import EdgePlugin, create_asgi
from switchyard.runtime.tasks import TaskSupervisor


async def run_edge(
    settings: Settings,
    kind: str,
    stop: asyncio.Event,
    plugins: Sequence[EdgePlugin] = (),
    *,
    instance: str = "",
) -> None:
    listen = settings.ingress.gateway if kind == "gateway" else settings.ingress.tail
    config = uvicorn.Config(
        create_asgi(settings, kind, plugins, instance=instance),
        host=listen.host,
        port=listen.port,
        loop="none",  # the caller's (uvloop) loop is already running
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # no client-IP logic: skip the per-request middleware
        timeout_graceful_shutdown=int(settings.stack.stop_timeout_s / 2),
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)

    async def stop_on_event() -> None:
        await stop.wait()
        server.should_exit = True

    loops = TaskSupervisor(f"{kind}-lifecycle")
    loops.spawn(stop_on_event())
    try:
        await server.serve()
    finally:
        await loops.cancel_all()
