"""What the fake providers share: a loopback aiohttp server that records every request and
knows how a real server behaves when a client hangs up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
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
