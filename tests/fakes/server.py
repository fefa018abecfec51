"""What the fake providers share: a loopback aiohttp server that records every request and
knows how a real server behaves when a client hangs up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    """One request as it arrived: path (with query), headers, and the decoded JSON body."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    """Base of a fake provider; subclasses add routes in :meth:`routes`."""

    calls: list[Recorded] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    finished_streams: int = 0
    abandoned: int = 0
    _runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def serve(self) -> int:
        """Start on a free loopback port and return it."""
        app = web.Application()
        self.routes(app)
        # handler_cancellation: a client hanging up cancels its handler, as on a real server,
        # so abandoned requests are visible (``abandoned``) and do not hold up ``stop``.
        self._runner = web.AppRunner(
            app, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def record(self, request: web.Request) -> Any:
        """Decode the JSON body and remember the request."""
        body = await request.json()
        self.calls.append(Recorded(request.path_qs, dict(request.headers), body))
        return body

    async def wait_counting_abandon(self, waiter: Awaitable[Any]) -> None:
        """Await ``waiter``; a client hanging up meanwhile counts as abandoned."""
        try:
            await waiter
        except asyncio.CancelledError:
            self.abandoned += 1
            raise


class InThread:
    """Runs a fake in its own thread and event loop, so a test that blocks its own loop (the
    synchronous SDKs do) cannot stall the fake it is talking to."""

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self, starter: Callable[[], Coroutine[Any, Any, str]]) -> str:
        """Start the fake with ``starter`` (e.g. ``fake.start``) in the thread; its base URL."""
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(starter(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
