"""A tiny HTTP endpoint per worker process: ``/health`` (alive), ``/ready`` (serving) and
``/metrics`` (Prometheus text).

Workers have no web framework; this answers the supervisor, Kubernetes probes and Prometheus
with a few lines of asyncio, off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from switchyard.runtime.metrics import CONTENT_TYPE

Probe = Callable[[], bool]


class HealthServer:
    def __init__(self, port: int | None, ready: Probe, host: str = "127.0.0.1") -> None:
        self._port = port
        self._host = host
        self._ready = ready
        self._server: asyncio.Server | None = None
        self.metrics: Callable[[], bytes] | None = None

    async def start(self) -> None:
        if self._port is None:
            return
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.split()
            path = parts[1].decode() if len(parts) > 1 else "/"
            status, body = self._answer(path)
            kind = CONTENT_TYPE if path == "/metrics" else "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, path: str) -> tuple[str, bytes]:
        if path == "/health":
            return "200 OK", b"ok\n"
        if path == "/ready":
            return (
                ("200 OK", b"ready\n")
                if self._ready()
                else ("503 Service Unavailable", b"not ready\n")
            )
        if path == "/metrics" and self.metrics is not None:
            return "200 OK", self.metrics()
        return "404 Not Found", b"not found\n"
