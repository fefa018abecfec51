"""Follow a NATS KV bucket live: the initial values, then every change, in one task.

Heads and model-proxies keep the route table this way, ingresses keep client keys, and every
replica applies a change within milliseconds of the write (no polling, no restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.bus.flow_control import quiet_flow_control
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.kv")

# (key, value or None when deleted, revision)
OnEntry = Callable[[str, bytes | None, int], Awaitable[None] | None]


class KvFollower:
    """Delivers every entry of ``bucket`` matching ``keys`` to ``on_entry``.

    :meth:`start` returns once the current contents were delivered, so a caller is ready to
    serve with a complete view. A handler that raises is logged and the entry skipped: a bad
    document never stops the follower.
    """

    def __init__(
        self, js: JetStreamContext, bucket: str, on_entry: OnEntry, keys: str = ">"
    ) -> None:
        self._js = js
        self._bucket = bucket
        self._keys = keys
        self._on_entry = on_entry
        self._loops = TaskSupervisor(f"kv-follow-{bucket}")
        self._watcher: KeyValue.KeyWatcher | None = None
        self.revision = 0

    async def start(self, timeout: float = 10.0) -> None:
        kv = await self._js.key_value(self._bucket)
        self._watcher = await kv.watch(self._keys)
        quiet_flow_control(self._watcher._sub)  # no poll four times a second while idle
        ready = asyncio.get_running_loop().create_future()
        self._loops.spawn(self._follow(ready))
        await asyncio.wait_for(ready, timeout)

    async def _follow(self, ready: asyncio.Future[None]) -> None:
        assert self._watcher is not None  # noqa: S101  (set by start before the task exists)
        async for entry in self._watcher:
            if entry is None:  # end of the initial contents
                if not ready.done():
                    ready.set_result(None)
                continue
            deleted = entry.operation in ("DEL", "PURGE")
            try:
                result = self._on_entry(entry.key, None if deleted else entry.value, entry.revision)
                if result is not None:
                    await result
            except Exception:  # a bad entry must not stop the follower; it is logged
                log.exception(
                    "ignored KV entry %s/%s (revision %s)", self._bucket, entry.key, entry.revision
                )
            self.revision = max(self.revision, entry.revision)
            if not ready.done() and entry.delta == 0:
                ready.set_result(None)

    async def stop(self) -> None:
        """Idempotent."""
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await self._watcher.stop()  # type: ignore[no-untyped-call]
            self._watcher = None
        await self._loops.cancel_all()
