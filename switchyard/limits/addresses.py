"""A Valkey host's addresses, looked up outside any call's bound and kept.

A container's DNS has been seen taking 10 s to answer on a loaded machine; a lookup inside a
0.5 s connection bound then fails every connection for as long as that lasts. So the lookup
runs in a task of its own: a caller waits for it only as long as its own bound allows, the
lookup goes on, and later connections use the addresses it found. After a failed connection
the name is looked up again in the background (the server may have moved), at most every
:data:`LOOK_AGAIN_S`, and the old addresses serve until the new ones are known.

Both Valkey clients use it: the edge's script client (:mod:`switchyard.limits.resp`) and the
pooled redis-py client of the admin app and accounting (:mod:`switchyard.limits.store`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable

from switchyard.errors import SwitchyardError

Resolve = Callable[[str, int], Awaitable[tuple[str, ...]]]
"""Turns a host name and port into the addresses to try, in order."""

LOOKUP_BOUND_S = 60.0
"""A name lookup that takes longer than this is given up (and tried again by the next call)."""

LOOK_AGAIN_S = 5.0
"""After a failed connection, the name is looked up again at most this often."""


class RedisUnavailable(SwitchyardError):
    """Valkey/Redis could not be reached or did not answer in time."""


async def look_up(host: str, port: int) -> tuple[str, ...]:
    """Every address the system resolver gives for ``host``, in its order (IPv4 or IPv6)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def literal(host: str) -> str | None:
    """``host`` itself if it is an IP address (nothing to look up), else None."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host


class HostAddresses:
    """The addresses of ``host``: see the module docstring."""

    def __init__(self, host: str, port: int, resolve: Resolve = look_up) -> None:
        self.host = host
        self._port = port
        self._resolve = resolve
        self._literal = literal(host)
        self._addresses: tuple[str, ...] | None = (self._literal,) if self._literal else None
        self._lookup: asyncio.Task[tuple[str, ...] | None] | None = None
        self._looked_at = -LOOK_AGAIN_S

    @property
    def known(self) -> bool:
        """Whether a lookup has answered (or the host is an address)."""
        return self._addresses is not None

    def _start_lookup(self) -> asyncio.Task[tuple[str, ...] | None]:
        if self._lookup is None or self._lookup.done():
            self._looked_at = time.monotonic()
            self._lookup = asyncio.get_running_loop().create_task(self._look_up())
        return self._lookup

    async def _look_up(self) -> tuple[str, ...] | None:
        """Look the host up; keep and return its addresses, or None if the lookup failed."""
        try:
            async with asyncio.timeout(LOOKUP_BOUND_S):
                addresses = await self._resolve(self.host, self._port)
        except Exception:  # noqa: BLE001  (any failure: no address; the caller says so)
            return None
        if addresses:
            self._addresses = addresses
        return addresses or None

    async def get(self) -> tuple[str, ...]:
        """The addresses to try: the kept ones, or the first lookup's when it answers.

        The caller bounds the wait; its bound ending does not end the lookup.

        Raises:
            RedisUnavailable: the lookup failed, or :meth:`close` ended it.
        """
        if self._addresses is not None:
            return self._addresses
        lookup = self._start_lookup()
        try:
            addresses = await asyncio.shield(lookup)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if lookup.cancelled() and (task is None or not task.cancelling()):
                raise RedisUnavailable("the Redis client was closed") from None
            raise
        if addresses is None:
            raise RedisUnavailable(f"cannot resolve the Redis host {self.host!r}")
        return addresses

    def connection_failed(self) -> None:
        """A connection to the kept addresses failed: look the name up again, if due."""
        if self._literal is None and time.monotonic() - self._looked_at >= LOOK_AGAIN_S:
            self._start_lookup()

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.cancel()
            self._lookup = None
