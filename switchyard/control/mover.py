"""The feeder's moves: store a held request in dispatch and hear, directly, whether it was stored.

One move is one publish to the deployment's dispatch subject with a reply token on the mover's
own inbox; the stream's acknowledgement (or its refusal, or no answer within ``timeout``) calls
the move's ``done`` exactly once. Both directions go through :mod:`switchyard.bus.direct`: no
task, future or timer per move (a move is about a third of the feeder's messages), and an
acknowledgement is settled in the connection's read loop. Unanswered moves are found once a
second by the mover's own sweep (:meth:`Mover.expire`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from switchyard.bus.direct import DirectDelivery, status_of
from switchyard.errors import BusError
from switchyard.runtime.jetstream import ack_duplicate, ack_error
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.control.feeder")
SWEEP_S = 1.0
# How a move went: the error (None: stored), and whether the stream had it already (msg-id).
Done = Callable[[BusError | None, bool], None]
_NO_RESPONDERS = b"503"


class Mover:
    """Publishes with acknowledgement over a :class:`DirectDelivery` (see the module docstring)."""

    def __init__(self, nc: NATS, direct: DirectDelivery, *, timeout: float = 5.0) -> None:
        self._direct = direct
        self._inbox = nc.new_inbox()
        self._prefix = len(self._inbox) + 1
        self._timeout = timeout
        self._count = 0
        self._waiting: dict[bytes, tuple[float, Done]] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self._sub: Subscription | None = None
        self._sweeps = TaskSupervisor("mover-sweep")

    def __len__(self) -> int:
        """Moves sent and not yet settled."""
        return len(self._waiting)

    async def start(self) -> None:
        self._sub = await self._direct.subscribe(f"{self._inbox}.*", self._on_ack)
        self._sweeps.spawn(self._sweep())

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            self.expire(loop.time())

    async def stop(self, grace: float = 2.0) -> None:
        """Wait up to ``grace`` for the acknowledgements on their way, settle the rest as
        failed, and stop listening."""
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), grace)
        await self._sweeps.cancel_all()
        for token in list(self._waiting):
            self._settle(token, BusError("stopped before the stream acknowledged"))
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._direct.unsubscribe(self._sub)
            self._sub = None

    def move(self, subject: str, data: bytes, headers: bytes, done: Done) -> None:
        """Publish; ``done`` is called exactly once, maybe before this returns."""
        self._count += 1
        token = str(self._count)
        key = token.encode()
        self._waiting[key] = (asyncio.get_running_loop().time() + self._timeout, done)
        self._empty.clear()
        try:
            self._direct.publish(subject, data, f"{self._inbox}.{token}", headers)
        except (NatsError, OSError) as exc:  # closed, or disconnected with a full buffer
            self._settle(key, BusError(f"could not publish to {subject}: {exc}"))

    def expire(self, now: float) -> None:
        """Settle as failed every move unanswered past its deadline (``now``: the loop's
        clock)."""
        for token, (deadline, _) in list(self._waiting.items()):
            if deadline <= now:
                self._settle(token, BusError("no acknowledgement from the stream for a move"))

    def _on_ack(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        token = subject[self._prefix :]
        if token in self._waiting:
            no_responders = status_of(headers) == _NO_RESPONDERS
            error = ack_error(data, no_responders=no_responders)
            self._settle(token, error, duplicate=error is None and ack_duplicate(data))

    def _settle(self, token: bytes, error: BusError | None, *, duplicate: bool = False) -> None:
        entry = self._waiting.pop(token, None)
        if not self._waiting:
            self._empty.set()
        if entry is None:
            return
        try:
            entry[1](error, duplicate)
        except Exception:  # the feeder's bug must not stop the other settlements
            log.exception("a move's callback failed")
