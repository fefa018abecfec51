"""Pull requests from one deployment's durable consumer with a fixed number of worker loops.

Each loop owns its pull subscription and serves the message it fetched before fetching the
next, so a process never holds more requests than it has loops; the consumer's
``max_ack_pending`` caps the whole deployment across every process. Loops are supervised: an
exception is logged and the loop carries on after a short pause, so a worker never dies
silently. On stop, loops finish the request in hand; idle fetches are cancelled and their
subscriptions removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from switchyard.bus import subjects

log = logging.getLogger("switchyard.modelproxy")

Handle = Callable[[Msg, str], Awaitable[None]]
FETCH_TIMEOUT_S = 5.0


class DeploymentWorkers:
    def __init__(
        self, js: JetStreamContext, deployment_id: str, loops: int, handle: Handle
    ) -> None:
        self.js = js
        self.deployment_id = deployment_id
        self.loops = loops
        self._handle = handle
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[int] = set()
        self._stopping = False

    async def start(self) -> None:
        consumer = subjects.dispatch_consumer(self.deployment_id)
        for i in range(self.loops):
            sub = await self.js.pull_subscribe_bind(
                durable=consumer, stream=subjects.DISPATCH_STREAM
            )
            self._tasks.append(
                asyncio.create_task(self._loop(i, sub), name=f"pull-{self.deployment_id}-{i}")
            )

    @property
    def busy(self) -> int:
        return len(self._busy)

    async def _loop(self, index: int, sub: JetStreamContext.PullSubscription) -> None:
        pause = 0.1
        try:
            while not self._stopping:
                try:
                    msgs = await sub.fetch(1, timeout=FETCH_TIMEOUT_S)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception:  # supervise: log, back off, keep pulling
                    log.exception(
                        "fetch failed for %s; retrying in %.1fs", self.deployment_id, pause
                    )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                pause = 0.1
                for msg in msgs:
                    self._busy.add(index)
                    try:
                        # Shielded: a stop that cancels idle loops must not cut a request short.
                        await asyncio.shield(self._handle(msg, self.deployment_id))
                    finally:
                        self._busy.discard(index)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stop(self, grace: float) -> None:
        """Stop fetching; give requests in hand up to ``grace`` seconds. Idempotent."""
        self._stopping = True
        idle = [t for i, t in enumerate(self._tasks) if i not in self._busy]
        for task in idle:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
