"""A loopback provider that streams a script: each step a pause, then an SSE event, written
as it comes (for the stream timers' tests, on real HTTP)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer

# One step: seconds to wait, then what to write (bytes as they are; a dict as a data: event).
Step = tuple[float, bytes | dict[str, Any]]


def sse(step: bytes | dict[str, Any]) -> bytes:
    if isinstance(step, bytes):
        return step
    named = f"event: {step['type']}\n" if "type" in step else ""
    return f"{named}data: {json.dumps(step)}\n\n".encode()


@dataclass
class Scripted(FakeServer):
    """Answers every POST with :attr:`script`, then ends the response."""

    script: list[Step] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._stream)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for pause, step in self.script:
            if pause:
                await asyncio.sleep(pause)
            await resp.write(sse(step))
        await resp.write_eof()
        return resp
