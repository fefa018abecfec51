"""The cancels the server stored, read back into a model-proxy's memory before it pulls work.

A model-proxy remembers cancels in its process (:class:`~.cancels.CancelMemory`). One that
restarted, or that was not running when a caller left (``switchyard down`` stops the edges
and the workers together, and a stopping edge cancels every request it still waits for), knew
nothing of those cancels, and served the requests still queued for callers that were gone, billing
their keys. So the server stores every ``llm.v1.cancel`` too: the CORE stream ``CANCELS``
captures the subject as it arrives through CLIENT's and INTERNAL's import of the LLM API, for
as long as a model-proxy would remember a cancel (``runtime.definitions``).

A model-proxy reads it when it starts, after subscribing to live cancels and before it pulls
any request, and again after a reconnect (from where the last read ended: cancels sent while
it was cut off). Each stored message goes through :meth:`~.cancels.Cancels.heard`, the checks
a live cancel gets, remembered from the time the server stored it. Who sent it is not known
there: JetStream stores a message without the ``Nats-Request-Info`` the server stamps on it
at the import, so a stored cancel counts by its proof (or an older client's key) alone, never
by a key hash an edge names (edges send a proof as well for this). The read is bounded: the
newest ``limit`` messages at most, headers only (a cancel has no body), a page at a time
(:func:`~switchyard.runtime.pages.read_all`), within ``budget_s``; a message that is no cancel
is skipped. A read that fails or runs out of time is logged and left: the model-proxy starts
anyway, since serving a few abandoned requests is better than serving none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.nuid import NUID

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.errors import BusError
from switchyard.runtime.pages import read_all
from switchyard.workers.modelproxy.cancels import CAPACITY, Cancels

log = logging.getLogger("switchyard.modelproxy.cancels")

READ_S = 10.0  # the longest a read may take (a start waits for it)
IDLE_S = 30.0  # the server removes a reader's consumer unused this long (a reader that died)
DELETE_S = 2.0  # the wait for removing it at the end of a read


@dataclass(slots=True)
class Reading:
    """What one read found.

    Attributes:
        heard: stored cancels handed to the memory.
        skipped: stored messages that were no cancel (malformed, no request id, no key).
        last_seq: the stream sequence of the last message read (0: none yet).
        complete: everything stored when the read began was read.
    """

    heard: int = 0
    skipped: int = 0
    last_seq: int = 0
    complete: bool = False


class StoredCancels:
    """Reads the ``CANCELS`` stream into ``cancels``, each time from where the last read
    ended."""

    def __init__(
        self,
        nc: NATS,
        cancels: Cancels,
        *,
        limit: int = CAPACITY,
        budget_s: float = READ_S,
        stream: str = subjects.CANCELS_STREAM,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=5)
        self._cancels = cancels
        self._limit = max(1, limit)
        self._budget_s = budget_s
        self._stream = stream
        self._lock = asyncio.Lock()
        self._created: datetime | None = None  # which life of the stream last_seq is of
        self.last_seq = 0

    async def read(self) -> Reading:
        """Read what was stored since the last read (everything kept, the first time).
        Never raises: a failure is logged, and what was read until then counts."""
        async with self._lock:
            reading = Reading(last_seq=self.last_seq)
            try:
                async with asyncio.timeout(self._budget_s):
                    await self._read(reading)
            except TimeoutError:
                log.warning(
                    "read %d stored cancels in %.0f s, not all of them; serving anyway",
                    reading.heard,
                    self._budget_s,
                )
            except NotFoundError:
                log.warning(
                    "no %s stream (run `switchyard provision`): cancels sent while no "
                    "model-proxy ran are not known here",
                    self._stream,
                )
            except (NatsError, BusError) as exc:
                log.warning("could not read the stored cancels: %s", exc)
            self.last_seq = reading.last_seq
            if reading.heard or reading.skipped:
                log.info(
                    "read %d stored cancels (%d skipped: no cancel)",
                    reading.heard,
                    reading.skipped,
                )
            return reading

    async def _read(self, reading: Reading) -> None:
        info = await self._js.stream_info(self._stream)
        if info.created != self._created:  # made anew since the last read: its sequences too
            self._created = info.created
            reading.last_seq = 0
        state = info.state
        if state.messages == 0 or state.last_seq <= reading.last_seq:
            reading.complete = True
            return
        start = max(reading.last_seq + 1, state.last_seq - self._limit + 1, state.first_seq)
        name = NUID().next().decode()
        consumer = await self._js.add_consumer(
            self._stream,
            ConsumerConfig(
                name=name,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.NONE,
                headers_only=True,
                inactive_threshold=IDLE_S,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        try:
            pending = min(consumer.num_pending or 0, self._limit)
            async with contextlib.aclosing(read_all(self._nc, self._stream, name, pending)) as msgs:
                async for msg in msgs:
                    self._hear(msg, reading)
                    if reading.heard + reading.skipped >= self._limit:
                        break
            reading.complete = True
        finally:
            with contextlib.suppress(Exception):  # else the server removes it once idle
                await asyncio.wait_for(self._js.delete_consumer(self._stream, name), DELETE_S)

    def _hear(self, msg: Msg, reading: Reading) -> None:
        meta = msg.metadata
        reading.last_seq = meta.sequence.stream
        # A sender's identity is never taken from a stored copy (see above).
        headers = {k: v for k, v in (msg.headers or {}).items() if k != h.REQUEST_INFO}
        try:
            heard = self._cancels.heard(headers, sent_at=meta.timestamp.timestamp())
        except Exception as exc:  # noqa: BLE001
            # Stored input from the client zone: a message that breaks the checks in a way
            # nobody foresaw is skipped, never the whole read. Its headers are not logged
            # (an older client's cancel carries its key).
            log.warning("skipped stored cancel %d (%s)", meta.sequence.stream, type(exc).__name__)
            heard = False
        if heard:
            reading.heard += 1
        else:
            reading.skipped += 1
