"""Keep-alives to callers and progress signals to JetStream for slow provider calls.

One ticker per process walks the requests in flight once a second, instead of a timer task per
request: a fast request (the common case) costs a dict insert and delete, nothing more. With
nothing in flight the ticker waits without a timer, so an idle model-proxy is not woken.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import replies
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.modelproxy")


@dataclass(slots=True)
class InFlight:
    """One request being served; ``touch`` whenever a message goes to the caller."""

    reply: str
    msg: Msg
    last_sent: float
    last_progress: float

    def touch(self, now: float) -> None:
        self.last_sent = now


class Heartbeats:
    def __init__(self, nc: NATS, *, keepalive_s: float, progress_s: float) -> None:
        self._nc = nc
        self._keepalive_s = keepalive_s
        self._progress_s = progress_s
        self._active: dict[int, InFlight] = {}
        self._busy = asyncio.Event()  # set while requests may be in flight
        self._loops = TaskSupervisor("heartbeats")

    def track(self, reply: str, msg: Msg) -> InFlight:
        now = asyncio.get_running_loop().time()
        entry = InFlight(reply, msg, now, now)
        self._active[id(entry)] = entry
        self._busy.set()
        return entry

    def untrack(self, entry: InFlight) -> None:
        self._active.pop(id(entry), None)

    def start(self) -> None:
        self._loops.spawn(self._tick())

    async def stop(self) -> None:
        await self._loops.cancel_all()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._active:  # nothing in flight: sleep without a timer
                self._busy.clear()
                await self._busy.wait()
            await asyncio.sleep(min(1.0, self._keepalive_s / 2))
            now = loop.time()
            for entry in list(self._active.values()):
                try:
                    if now - entry.last_sent >= self._keepalive_s:
                        await replies.send_keepalive(self._nc, entry.reply)
                        entry.last_sent = now
                    if now - entry.last_progress >= self._progress_s:
                        await entry.msg.in_progress()
                        entry.last_progress = now
                except Exception:  # a closed connection or acked message: skip this round
                    log.debug("heartbeat skipped for %s", entry.reply, exc_info=True)
