"""A TCP relay between one NATS client and its server, which a test can cut or make swallow.

TLS passes through it untouched. :meth:`Relay.cut` drops the connection through it and lets
no new one through until :meth:`Relay.open`; :meth:`Relay.swallow` keeps the connection up but
drops what the client sends from then on (until :meth:`Relay.flow`), as a NATS node that dies
after the client wrote to it and before passing anything on: the client cannot know, until the
connection breaks or its pings go unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support import free_port


class Relay:
    def __init__(self, target: int) -> None:
        self.port = free_port()
        self._target = target
        self._server: asyncio.Server | None = None
        self._ends: set[asyncio.StreamWriter] = set()
        self._swallowing = False
        self.swallowed = 0  # bytes the client sent that were dropped

    async def open(self) -> None:
        self._swallowing = False
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    def swallow(self) -> None:
        self._swallowing = True

    def flow(self) -> None:
        """What the client sends gets through again (a new connection's too)."""
        self._swallowing = False

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for end in self._ends:
            end.transport.abort()
        self._ends.clear()

    async def _link(self, client: asyncio.StreamReader, client_end: asyncio.StreamWriter) -> None:
        server, server_end = await asyncio.open_connection("127.0.0.1", self._target)
        self._ends |= {client_end, server_end}
        await asyncio.gather(
            self._copy(client, server_end, up=True), self._copy(server, client_end)
        )

    async def _copy(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, up: bool = False
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if up and self._swallowing:
                    self.swallowed += len(data)
                    continue
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
