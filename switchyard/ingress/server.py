"""Run an edge under uvicorn (uvloop + httptools) until SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence

import uvicorn

from switchyard.config import Settings
from switchyard.ingress.app import EdgePlugin, create_asgi
from switchyard.ingress.protocol import guarded
from switchyard.runtime.tasks import TaskSupervisor


class _Server(uvicorn.Server):
    """uvicorn's server with a main loop that wakes once a second instead of ten times.

    uvicorn's loop sleeps 0.1 s between ticks to refresh the Date header (once a second) and to
    check the exit flag: 10 wake-ups a second of an idle edge, about half its idle CPU. Here a
    tick is a second (the Date header's resolution) and ``wake`` ends the wait at once when the
    edge is asked to stop.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.wake = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers alone: ``switchyard serve`` owns SIGTERM and
        SIGINT (they set ``stop`` and start its exit deadline), and uvicorn's own would
        replace them for as long as the edge serves."""
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # every tick refreshes the Date header
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0)


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
        http=guarded(settings),  # httptools, with head, time and connection limits
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # no client-IP logic: skip the per-request middleware
        timeout_graceful_shutdown=int(settings.stack.stop_timeout_s / 2),
        timeout_keep_alive=int(settings.ingress.keepalive_s),
    )
    server = _Server(config)

    async def stop_on_event() -> None:
        await stop.wait()
        server.should_exit = True
        server.wake.set()

    loops = TaskSupervisor(f"{kind}-lifecycle")
    loops.spawn(stop_on_event())
    try:
        await server.serve()
    finally:
        await loops.cancel_all()
