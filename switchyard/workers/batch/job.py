"""One batch, from its input file to its output files, surviving restarts.

Each line is a request on the bus as the batch's key, at ``batch`` priority, with request id
``<batch>:<line>`` (billed once per request id and hop, however often it runs). Its
answer is recorded once (a KV create); a line with a recorded result is never sent again.
After a restart the runner sends every line without a result again, under attempt numbers no
earlier run used (``generation``): a submission lost with the old reply path is replaced, not
deduplicated against. A line that was already running when the old runner died may run twice
at the provider, but its result is recorded once and it is billed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
from nats.errors import Error as NatsError

from switchyard.bus import subjects
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.bus.replies import ReplyKind, error_from_reply
from switchyard.client import LLMClient
from switchyard.config import BatchSettings
from switchyard.errors import (
    ApiError,
    BusError,
    DeadlineExceeded,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.runtime.batchstore import BatchStore
from switchyard.schemas import batches as b
from switchyard.workers.batch import formats
from switchyard.workers.batch.inputs import BatchInput, InputGone

log = logging.getLogger("switchyard.batch")

SUBJECTS = {
    "chat": subjects.CHAT,
    "complete": subjects.COMPLETE,
    "embed": subjects.EMBED,
    "responses": subjects.RESPONSES,
    "messages": subjects.MESSAGES,
}
ATTEMPTS_PER_GENERATION = 40
_JSON = msgspec.json.Encoder()


class Job:
    """Runs the lines of one batch that have no result yet (see the module docstring)."""

    def __init__(
        self,
        record: b.BatchRecord,
        source: BatchInput,
        total: int,
        *,
        store: BatchStore,
        llm: LLMClient,
        settings: BatchSettings,
        slots: asyncio.Semaphore,
        cancelled: Callable[[], bool],
        on_line: Callable[[bool], None],
    ) -> None:
        self.record = record
        self.batch_id = record.batch.id
        self.source = source
        self.total = total
        self.store = store
        self.llm = llm
        self.settings = settings
        self.slots = slots
        self.cancelled = cancelled
        self.on_line = on_line
        self.completed = 0
        self.failed = 0
        self._op = b.RUNNABLE[record.batch.endpoint]
        self.format = formats.for_endpoint(record.batch.endpoint)

    async def run(self, done: dict[int, bool]) -> None:
        """Send every line missing from ``done`` (line number -> its recorded result is a
        success)."""
        for ok in done.values():
            self._count(ok)
        if len(done) >= self.total:
            return
        # The input is read as lines are sent: what waits for a slot is one chunk, not the file.
        unread: Exception | None = None
        async with asyncio.TaskGroup() as group:
            try:
                async with contextlib.aclosing(self.source.lines()) as lines:
                    async for index, line in lines:
                        if index in done:
                            continue
                        await self.slots.acquire()
                        if self.cancelled() or self._expired():
                            self.slots.release()
                            break
                        task = group.create_task(self._line(index, line))
                        # Released however the task ends, even cancelled before it started.
                        task.add_done_callback(lambda _: self.slots.release())
            except (BusError, InputGone, NatsError, TimeoutError) as exc:
                # The input stopped arriving: the lines already sent finish first
                unread = exc  # (cancelled, they would run and be paid for again next pass).
        if unread is not None:
            raise unread

    def _expired(self) -> bool:
        expires = self.record.batch.expires_at
        return expires is not None and time.time() >= expires

    def _count(self, ok: bool) -> None:
        if ok:
            self.completed += 1
        else:
            self.failed += 1

    async def _line(self, index: int, line: b.BatchLine) -> None:
        try:
            status, body = await self._send(index, line)
            result = self.format.line(self.batch_id, index, line, status, body)
            if await self.store.record_line(self.batch_id, index, result):
                ok = 200 <= status < 300
                self._count(ok)
                self.on_line(ok)
        except asyncio.CancelledError:
            raise
        except Exception:  # one line's failure must not stop the batch: it is retried later
            log.exception("line %d of %s failed unexpectedly", index, self.batch_id)

    async def _send(self, index: int, line: b.BatchLine) -> tuple[int, bytes]:
        body = _JSON.encode({**line.body, "stream": False} if self._op != "embed" else line.body)
        base = 1 + (max(0, self.record.generation - 1) * ATTEMPTS_PER_GENERATION) % 960
        tries = 0
        while True:
            attempt = base + min(tries, ATTEMPTS_PER_GENERATION - 1)
            remaining = self.settings.line_timeout_s
            expires = self.record.batch.expires_at
            if expires:
                remaining = min(remaining, expires - time.time())
            if remaining <= 0:
                expired = DeadlineExceeded("the batch expired before this line ran")
                return expired.status, self.format.error(expired)
            env = Envelope(
                request_id=f"{self.batch_id}:{index}",
                attempt=attempt,
                deadline=Deadline.after(remaining),
                key_hash=self.record.key_hash,
                key_id=self.record.key_id,
                priority="batch",
            )
            try:
                reply = await self.llm.request(SUBJECTS[self._op], body, env)
            except (DeadlineExceeded, RateLimited, ServiceUnavailable) as exc:
                # Not answered in time, or no room right now: send it again (a new attempt).
                tries += 1
                if self.cancelled():
                    return exc.status, self.format.error(exc)
                await asyncio.sleep(min(5.0, 0.2 * tries))
                continue
            except ApiError as exc:
                return exc.status, self.format.error(exc)
            if reply.kind is ReplyKind.ERROR:  # request() raises these; kept for safety
                failure = error_from_reply(reply)
                return failure.status, self.format.error(failure)
            return 200, reply.body
