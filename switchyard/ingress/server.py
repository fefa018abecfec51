"""Run an edge under uvicorn (uvloop + httptools) until SIGTERM, then shut down gracefully.

A stop (a rolling restart, ``switchyard down``) first lets the requests in flight finish: the
edge stops accepting connections and waits. When the grace period ends, the LLM requests
still waiting for their answers are answered 503 ``edge_stopping`` (a stream that started ends
with that error event) and their cancels go out while the NATS connection is still open, so
the model-proxies stop the calls nobody will read. uvicorn's own timeout, a moment later, is
only a backstop: it cancels what is left, which its clients see as a bare 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

import uvicorn

from switchyard.config import Settings
from switchyard.ingress.app import EdgePlugin, create_asgi
from switchyard.ingress.protocol import guarded
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.ingress")

# Between the end of the edge's grace period and uvicorn's: time to write the 503s and the
# streams' error events, and publish the cancels.
ANSWER_STOPPING_S = 1.0


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
    asgi = create_asgi(settings, kind, plugins, instance=instance)
    # Half the process's stop time, as every worker's grace; the lifespan's stop follows.
    grace_s = max(0.0, settings.stack.stop_timeout_s / 2 - ANSWER_STOPPING_S)
    config = uvicorn.Config(
        asgi,
        host=listen.host,
        port=listen.port,
        loop="none",  # the caller's (uvloop) loop is already running
        # httptools, with head, time and connection limits
        http=guarded(settings, asgi.edge.new_request_id),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # no client-IP logic: skip the per-request middleware
        timeout_graceful_shutdown=math.ceil(grace_s + ANSWER_STOPPING_S),
        timeout_keep_alive=int(settings.ingress.keepalive_s),
    )
    server = _Server(config)

    async def stop_on_event() -> None:
        await stop.wait()
        server.should_exit = True
        server.wake.set()
        await asyncio.sleep(grace_s)  # cancelled if every request ended before
        cut = asgi.edge.waiting.stop()
        if cut:
            log.warning(
                "%s stopping: %d request(s) still in progress after %.1fs were ended "
                "(503 edge_stopping, or that error as a started stream's last event; "
                "LLM calls cancelled)",
                kind,
                cut,
                grace_s,
            )

    loops = TaskSupervisor(f"{kind}-lifecycle")
    loops.spawn(stop_on_event())
    try:
        await server.serve()
    finally:
        await loops.cancel_all()
