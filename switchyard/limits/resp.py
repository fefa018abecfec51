"""A small RESP2 client for the one hot call of the edge: running a Lua script in Valkey.

The edge runs a script per request; redis-py costs ~85 µs of CPU per call there (connection
pool, command objects, a pure-Python parser without hiredis), this client ~25 µs: one
connection, commands pipelined as they come (Valkey answers in order, so replies resolve a FIFO
of futures), an incremental parser fed by the protocol's ``data_received``. It speaks only what
scripts need: ``AUTH``, ``SELECT``, ``EVALSHA`` with a ``SCRIPT LOAD`` fallback.

A broken connection fails every call in flight with :class:`RedisUnavailable` and is re-opened
by the next call; every call is bounded by ``timeout``. The host name is looked up outside that
bound and its addresses kept (:mod:`switchyard.limits.addresses`): calls fail fast while the
first lookup runs; once it answers, connections use its addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from switchyard.errors import SwitchyardError
from switchyard.limits.addresses import HostAddresses, RedisUnavailable, Resolve, look_up

Reply = int | bytes | list[Any] | None

__all__ = ["RedisReplyError", "RedisUnavailable", "Resolve", "Script", "ScriptClient", "encode"]


class RedisReplyError(SwitchyardError):
    """Valkey answered with an error (``NOPERM``, ``NOSCRIPT``, a script error...)."""


def encode(*parts: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Parser:
    """Incremental RESP2 parser: feed bytes, get complete replies."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Reply | RedisReplyError]:
        self._buf += data
        replies: list[Reply | RedisReplyError] = []
        while True:
            parsed = self._parse(0)
            if parsed is None:
                break
            value, end = parsed
            del self._buf[:end]
            replies.append(value)
        return replies

    def _parse(self, pos: int) -> tuple[Any, int] | None:
        buf = self._buf
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : eol])
        nxt = eol + 2
        if kind == b":":
            return int(line), nxt
        if kind == b"+":
            return line, nxt
        if kind == b"-":
            return RedisReplyError(line.decode(errors="replace")), nxt
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, nxt
            if len(buf) < nxt + size + 2:
                return None
            return bytes(buf[nxt : nxt + size]), nxt + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, nxt
            items: list[Any] = []
            for _ in range(count):
                parsed = self._parse(nxt)
                if parsed is None:
                    return None
                item, nxt = parsed
                items.append(item)
            return items, nxt
        raise RedisUnavailable(f"unexpected reply from Redis: {bytes(kind)!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self._parser = _Parser()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except RedisUnavailable as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()
            return
        for reply in replies:
            if not self.waiting:
                continue
            future = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, RedisReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(RedisUnavailable("connection to Redis lost"))

    def _fail(self, exc: Exception) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class ScriptClient:
    """One pipelined connection that runs Lua scripts.

    Args:
        url: ``redis://host:port/db``.
        username / password: the role's ACL user.
        timeout: bound on connecting and on every call, in seconds (the host name's lookup
            excepted, see the module's docstring).
        resolve: the name lookup (the system resolver unless a test gives its own).
    """

    def __init__(
        self,
        url: str,
        *,
        username: str,
        password: str,
        timeout: float,
        resolve: Resolve = look_up,
    ) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._db = int(parts.path.strip("/") or 0)
        self._username = username
        self._password = password
        self._timeout = timeout
        self._hosts = HostAddresses(self._host, self._port, resolve)
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and not proto.lost:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        looked_up = False
        try:
            # The bound covers the wait for the lock too: callers queued behind a slow
            # connection each fail at their own bound, not one after another.
            async with asyncio.timeout(self._timeout), self._connecting:
                proto = self._proto
                if proto is not None and not proto.lost:
                    return proto
                addresses = await self._hosts.get()
                looked_up = True
                fresh = await self._open(addresses)
        except (OSError, TimeoutError) as exc:
            if not looked_up and not self._hosts.known:
                raise RedisUnavailable(
                    f"cannot connect to Redis: looking up {self._host!r} takes long"
                ) from None
            if looked_up:  # a connection failed, not the wait behind another caller's
                self._hosts.connection_failed()  # it may have moved: look again, if due
            raise RedisUnavailable(f"cannot connect to Redis: {type(exc).__name__}") from None
        self._proto = fresh
        return fresh

    async def _open(self, addresses: tuple[str, ...]) -> _Protocol:
        """A logged-in connection to the first of ``addresses`` that takes one."""
        loop = asyncio.get_running_loop()
        failure: OSError = OSError("no address to connect to")
        for address in addresses:
            try:
                _, fresh = await loop.create_connection(_Protocol, address, self._port)
            except OSError as exc:
                failure = exc
                continue
            try:
                if self._password:
                    await self._send(fresh, encode("AUTH", self._username, self._password))
                if self._db:
                    await self._send(fresh, encode("SELECT", self._db))
            except BaseException:
                if fresh.transport is not None:
                    fresh.transport.close()  # refused or timed out half-way: never leak it
                raise
            return fresh
        raise failure

    @staticmethod
    def _send(proto: _Protocol, payload: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        assert proto.transport is not None  # noqa: S101  (set by connection_made)
        proto.waiting.append(future)
        proto.transport.write(payload)
        return future

    async def call(self, *parts: bytes | str | int) -> Any:
        """Send one command and return its reply.

        Raises:
            RedisUnavailable: no connection, or no answer within the timeout.
            RedisReplyError: Redis answered with an error.
        """
        proto = await self._connection()
        future = self._send(proto, encode(*parts))
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            # A reply may still come for this future; drop the connection so the FIFO of
            # futures cannot get out of step with replies.
            if proto.transport is not None:
                proto.transport.close()
            raise RedisUnavailable("Redis did not answer in time") from None

    async def close(self) -> None:
        self._hosts.close()
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class Script:
    """A Lua script run with ``EVALSHA``, loaded on first ``NOSCRIPT``."""

    def __init__(self, client: ScriptClient, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        try:
            return await self._client.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        with contextlib.suppress(RedisReplyError):
            await self._client.call("SCRIPT", "LOAD", self._source)
        return await self._client.call("EVALSHA", self._sha, len(keys), *keys, *args)
