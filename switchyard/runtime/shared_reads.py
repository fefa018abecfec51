"""Values read at most once a while per key, with callers asking meanwhile sharing the read.

A batch's lines go out many per second and each asks the same questions (its key's record,
its key's spend): one read per key per ``cache_s`` answers them all, and callers that ask
while that read is under way wait for it rather than starting their own. A caller that is
cancelled does not cancel the read the others wait on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class SharedReads(Generic[V]):
    """``fetch(key)`` results, each kept for ``cache_s``; past ``max_kept`` entries the
    expired ones are swept (keys that stopped being asked about)."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[V]],
        *,
        cache_s: float,
        max_kept: int = 10_000,
    ) -> None:
        self._fetch = fetch
        self._cache_s = cache_s
        self._max_kept = max_kept
        self._kept: dict[str, tuple[float, V]] = {}  # key -> (read at, monotonic; value)
        self._reading: dict[str, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, key: str) -> V:
        """The value of ``key``, read now unless a read of the last ``cache_s`` answers.

        Raises:
            whatever ``fetch`` raises (every caller sharing that read gets it).
        """
        kept = self._kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < self._cache_s:
            return kept[1]
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(key))
            self._reading[key] = reading
            reading.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(reading)

    async def _read(self, key: str) -> V:
        value = await self._fetch(key)
        now = time.monotonic()
        self._kept[key] = (now, value)
        if len(self._kept) > self._max_kept:
            self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self._cache_s}
        return value

    def _done(self, key: str, reading: asyncio.Future[V]) -> None:
        self._reading.pop(key, None)
        if not reading.cancelled():
            reading.exception()  # retrieved: its callers (maybe all cancelled) re-raise it

    async def close(self) -> None:
        """Cancel the reads under way."""
        readings = list(self._reading.values())
        for reading in readings:
            reading.cancel()
        await asyncio.gather(*readings, return_exceptions=True)
