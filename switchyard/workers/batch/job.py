"""One batch, from its input file to its output files, surviving restarts.

Each line is a request on the bus as the batch's key, at ``batch`` priority, with request id
``<batch>:<line>`` (billed once per request id and hop, however often it runs). Its
answer is recorded once (a KV create); a line with a recorded result is never sent again.
After a restart the runner sends every line without a result again, under attempt numbers no
earlier run used (``generation``): a submission lost with the old reply path is replaced, not
deduplicated against. A line sent and unanswered when the old runner died (running or
queued) may run twice at the provider, but its result is recorded once and billed once.

A line holds one of the runner's sending slots (:class:`~.slots.FairSlots`) only while it is on
the bus; a line waiting to be sent again (no room, 503, 429, no answer in time) gives its slot
to the next batch in turn; how long it waits, and after how many failures of one kind (a
provider's 5xx, its 429s) it is given up, is :mod:`~.retries`'. What stops a line from being
retried for ever: its batch's window (the line is then ``batch_expired``), a cancel (it is left
unrun, and withdrawn if it is on the bus with no provider known to work on it:
:meth:`Job.withdraw`), a stop of the runner (:meth:`Job.stop_sending`: the line is left unrun,
or, on the bus, finishes), :data:`MAX_TIMEOUTS` attempts that each went unanswered for
``batch.line_timeout_s`` (an error row naming the timeout), or its key's budget used up: each
attempt first checks it (:mod:`~switchyard.workers.batch.budget`), and a spent one ends the
line as an error row with the 429 ``budget_exceeded`` an HTTP request of the key gets. A budget
that cannot be checked (Valkey down, ``redis.on_unavailable: fail_closed``) makes the line
wait, like a 503. A budget not spent but held (the spend plus the estimated cost of the key's
lines this runner has in flight, or finished since the spend was read, reach it) makes the line
wait too, holding no slot, until the holds drop or the spend is read again (at least once a
second): then it is sent, or refused if the spend reached the budget. The attempt that is let
through holds its estimated cost until it is over (:mod:`~switchyard.workers.batch.holds`).

The budget is checked before the line asks for a slot, not while it holds one: a Valkey that
does not answer (blackholed: each read waits ``redis.timeout_s``) must not keep the slots,
which every batch shares, busy with reads. A line that passed its check and then waited for a
slot is not sent if a later check by another line of its batch (same key) found the budget
spent. What still goes past a budget: the line that the holds let through last (as at the
edge), lines that cost more than their estimate, lines of a model the platform never billed
(no estimate: they hold nothing), the key's HTTP requests and other runner replicas' lines
(this runner counts only its own holds), and, when no line of the batch is checked after a
crossing by those, its lines that passed their check and still wait for a slot: at most
``batch.max_in_flight`` (the lines of one batch started at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError

from switchyard.bus import replies, subjects
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.client import LLMClient
from switchyard.config import BatchSettings
from switchyard.errors import (
    ApiError,
    BusError,
    DeadlineExceeded,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.runtime.batchstore import BatchStore
from switchyard.schemas import batches as b
from switchyard.workers.batch import formats
from switchyard.workers.batch.budget import BudgetAnswer, BudgetWait
from switchyard.workers.batch.holds import Hold, KeyHolds
from switchyard.workers.batch.inputs import BatchInput, InputGone
from switchyard.workers.batch.retries import Retries, passing
from switchyard.workers.batch.slots import FairSlots
from switchyard.workers.batch.usage import Tally

log = logging.getLogger("switchyard.batch")

SUBJECTS = {
    "chat": subjects.CHAT,
    "complete": subjects.COMPLETE,
    "embed": subjects.EMBED,
    "responses": subjects.RESPONSES,
    "messages": subjects.MESSAGES,
}
ATTEMPTS_PER_GENERATION = 40
# Attempts a line may go unanswered for the whole ``batch.line_timeout_s`` before it is an
# error row: a line no deployment answers in time is not worth a day of resubmissions (each
# may run, and be paid for, at the provider).
MAX_TIMEOUTS = 3
# How often a batch whose lines wait to be sent again says so in the log.
WAITING_LOG_S = 30.0
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
        slots: FairSlots,
        cancelled: Callable[[], bool],
        on_line: Callable[[bool], None],
        max_payload: int = 0,
        budget: Callable[..., Awaitable[BudgetAnswer]] | None = None,
        usage: Tally | None = None,
        current_hash: Callable[[str], Awaitable[str]] | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
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
        self.max_payload = max_payload  # the bus's limit per message (0: not known)
        # What the budget of the batch's key says of a line (by key hash and model alias).
        self.budget = budget
        # The summed usage of the batch's recorded results (those before this run included),
        # to which each result this job records is added; None: the batch shows none.
        self.usage = usage
        # The hash of the batch's key's current secret, from the one the batch was made with:
        # each line names the key by it (see :meth:`_attempt`).
        self.current_hash = current_hash
        # Awaited before each line goes out: returns when it may (the runner's lease).
        self.pause = pause
        # How many budget answers the batch's lines got, and the latest if it was a refusal.
        self._checks = 0
        self._refused: tuple[int, RateLimited] | None = None
        self.completed = 0
        self.failed = 0
        # Lines waiting to be sent again, and why the last one waits (for the log).
        self.waiting = 0
        self.waiting_for = ""
        self._waiting_logged = 0.0
        self._op = b.RUNNABLE[record.batch.endpoint]
        self.format = formats.for_endpoint(record.batch.endpoint)
        # Lines on the bus now (sent, not answered): each one's task, and what it showed.
        self._on_bus: dict[int, tuple[asyncio.Task[object], _Watch]] = {}
        # The runner is stopping: no line is sent any more (see stop_sending()).
        self._stopping = False
        # Lines waiting to be sent again (a pause, or a held budget): each one's task.
        self._resting: set[asyncio.Task[object]] = set()

    def withdraw(self, *, working_too: bool = False) -> int:
        """Stop the lines on the bus that no provider is known to be working on (no
        keep-alive came for them): closing their requests sends ``llm.v1.cancel``, so a line
        still waiting in its deployment's queue is dropped there unserved (not run, not
        billed), and one a provider began less than ``modelproxy.keepalive_s`` ago has its
        call stopped (billed what it cost). ``working_too``: stop those a provider works on
        as well (their key was revoked). The stopped lines have no result (as lines never
        sent); how many were stopped."""
        stopped = 0
        for task, watch in list(self._on_bus.values()):
            if (working_too or not watch.provider_worked) and not task.done():
                task.cancel()
                stopped += 1
        return stopped

    def stop_sending(self) -> int:
        """The runner is stopping: send no line any more, and end at once the lines waiting to
        be sent again (they have no result, as lines never sent, and run after a restart).
        The lines on the bus go on: their answers are recorded as usual, so a line a provider
        works on is neither cut (billed as a stopped call) nor run again after the restart.
        A line waiting for a sending slot ends when it gets one, which is when a line on the
        bus ends. How many waiting lines were ended."""
        self._stopping = True
        stopped = 0
        for task in list(self._resting):
            if not task.done():
                task.cancel()
                stopped += 1
        return stopped

    def resume_sending(self) -> None:
        """Undo :meth:`stop_sending` (the runner holds its lease again): the lines not yet
        sent go out after all, if the job has not ended its pass yet."""
        self._stopping = False

    async def _paused(self) -> None:
        if self.pause is not None:
            await self.pause()

    @property
    def sending(self) -> bool:
        """Whether lines may still be sent: the batch is neither cancelled nor stopping."""
        return not (self._stopping or self.cancelled())

    async def run(self, done: dict[int, bool]) -> None:
        """Send every line missing from ``done`` (line number -> its recorded result is a
        success). Once the batch is cancelled or expired, or the runner stops
        (:meth:`stop_sending`), no line is sent any more; the lines already sent finish and
        are recorded (they run and are billed at the provider whatever becomes of their
        answer), unless the runner withdraws them (:meth:`withdraw`)."""
        for ok in done.values():
            self._count(ok)
        if len(done) >= self.total:
            return
        # Lines of this batch started and not ended (sent, or waiting to be sent again): what
        # it holds of the input is this many lines, not the file.
        started = asyncio.Semaphore(self.settings.max_in_flight)
        unread: Exception | None = None
        async with asyncio.TaskGroup() as group:
            try:
                async with contextlib.aclosing(self.source.lines()) as lines:
                    async for index, line in lines:
                        if index in done:
                            continue
                        await started.acquire()
                        await self._paused()
                        if not self.sending or self._expired():
                            started.release()
                            break
                        task = group.create_task(self._line(index, line))
                        # Released however the task ends, even cancelled before it started.
                        task.add_done_callback(lambda _: started.release())
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
            answer = await self._send(index, line)
            if answer is None:  # not run (cancelled, or the window closed): no result
                return
            status, body = answer
            result = self.format.line(self.batch_id, index, line, status, body)
            if await self.store.record_line(self.batch_id, index, result):
                if self.usage is not None:  # (recorded once: counted once)
                    self.usage.add(result)
                ok = 200 <= status < 300
                self._count(ok)
                self.on_line(ok)
        except asyncio.CancelledError:
            raise
        except Exception:  # one line's failure must not stop the batch: it is retried later
            log.exception("line %d of %s failed unexpectedly", index, self.batch_id)

    def _time_left(self) -> float:
        """How long the next attempt may take: ``batch.line_timeout_s``, or less when the
        batch's window closes sooner."""
        remaining = self.settings.line_timeout_s
        expires = self.record.batch.expires_at
        if expires:
            remaining = min(remaining, expires - time.time())
        return remaining

    def _too_large(self, size: int) -> PayloadTooLarge | None:
        limit = self.max_payload - replies.HEADERS_ROOM
        if self.max_payload and size > limit:
            return PayloadTooLarge(
                f"this request is {size} bytes; a batch line's request may be at most "
                f"{limit} bytes",
                param="body",
            )
        return None

    async def _send(self, index: int, line: b.BatchLine) -> tuple[int, bytes] | None:
        """The line's answer (status, body), or None when it was not run (the batch was
        cancelled or its window closed first)."""
        body = _JSON.encode(whole(line.body) if self._op != "embed" else line.body)
        refused = self._too_large(len(body))
        if refused is not None:
            return refused.status, self.format.error(refused)
        model = line.body.get("model")
        alias = model if isinstance(model, str) else ""  # (what its usage is billed under)
        attempt = _Attempt(
            index=index,
            request_id=f"{self.batch_id}:{index}",
            body=body,
            base=1 + (max(0, self.record.generation - 1) * ATTEMPTS_PER_GENERATION) % 960,
            retries=Retries(self.settings.retry_base_s),
        )
        try:
            return await self._attempts(attempt, alias)
        finally:
            attempt.stop_waiting()

    async def _attempts(self, attempt: _Attempt, alias: str) -> tuple[int, bytes] | None:
        """:meth:`_send`'s attempts, until the line has its answer or is not run."""
        while True:
            if not self.sending or self._time_left() <= 0:  # (or the window closed)
                return None
            # The key's budget, checked as an HTTP request of the key is, and before the line
            # asks for a slot (a slow read holds none): a spent one ends the line as the error
            # that request gets (not retried); a held one makes it wait, holding nothing.
            blocked, checked = await self._over_budget(alias, attempt.place)
            if isinstance(blocked, BudgetWait):
                attempt.wait_in_line(blocked.holds)  # (keeps its place while it waits again)
                await self._wait(blocked.why, blocked.changed(self._time_left()))
                continue
            attempt.stop_waiting()  # let through, refused or unsure: the next line's turn
            if isinstance(blocked, RateLimited):
                return blocked.status, self.format.error(blocked)
            if isinstance(blocked, ServiceUnavailable):  # the budget cannot be read now
                failure: ApiError = blocked
            else:
                attempt.sent = False
                try:
                    answer = await self._attempt(attempt, checked)
                finally:
                    if blocked is not None:  # (sent, it may be billed: held until read)
                        blocked.end(sent=attempt.sent)
                if not isinstance(answer, ApiError):
                    return answer
                failure = answer
            # Waiting to send it again holds no slot: other batches' lines run meanwhile.
            attempt.tries += 1
            wait = attempt.retries.after(failure)
            if isinstance(wait, ApiError):  # failed that way as often as it may
                return wait.status, self.format.error(wait)
            await self._wait(failure, asyncio.sleep(max(0.0, min(wait, self._time_left()))))

    async def _attempt(
        self, attempt: _Attempt, checked: int
    ) -> tuple[int, bytes] | ApiError | None:
        """Send the line once, in its batch's turn: its answer, the failure it is sent again
        after, or None (not run: cancelled, or the window closed while it waited for a
        turn)."""
        async with self.slots.turn(self.batch_id):
            await self._paused()
            if not self.sending:  # (the wait for a turn may have been long)
                return None
            remaining = self._time_left()
            if remaining <= 0:  # the batch expired before this line ran
                return None
            spent = self._refused_since(checked)
            if spent is not None:  # found spent by another line while this one waited
                return spent.status, self.format.error(spent)
            # After a rotation, lines name the key by its current secret's hash, not the old
            # one's the batch was made with: the head names an old secret beside the key (its
            # cancels count) only during its grace, and the runner's own cancels must count
            # after it. Read in the turn, just before sending: a wait for a turn may last
            # minutes, and a rotation meanwhile sent the line under the old hash.
            key_hash = await self._key_hash()
            # The deadline the request carries is the runner's whole wait for it: the client
            # gives up exactly when every hop does, never while one still works.
            env = Envelope(
                request_id=attempt.request_id,
                attempt=attempt.base + min(attempt.tries, ATTEMPTS_PER_GENERATION - 1),
                deadline=Deadline.after(remaining),
                key_hash=key_hash,
                key_id=self.record.key_id,
                priority="batch",
            )
            watch = _Watch()
            attempt.sent = True
            task = asyncio.current_task()
            if task is not None:  # (withdrawn by cancelling it: see withdraw())
                self._on_bus[attempt.index] = (task, watch)
            try:
                reply = await self.llm.request(
                    SUBJECTS[self._op],
                    attempt.body,
                    env,
                    on_keepalive=watch.saw_keepalive,
                    on_moved=watch.moved,
                )
            except asyncio.CancelledError:  # withdrawn: the client sent its cancel
                await self._cancel_as_current(env)
                raise
            except DeadlineExceeded as exc:
                # Counted only when a provider was working on it (a model-proxy's keep-alive
                # came): a line that waited in a busy queue cost nothing and goes on waiting,
                # up to the batch's window. An attempt cut short by the window is not the
                # line's fault either.
                if watch.provider_worked and remaining >= self.settings.line_timeout_s:
                    attempt.timeouts += 1
                if attempt.timeouts >= MAX_TIMEOUTS:
                    timed_out = self._timed_out(attempt.timeouts)
                    return timed_out.status, self.format.error(timed_out)
                return exc
            except (RateLimited, ServiceUnavailable) as exc:
                return exc  # no room right now: send it again (a new attempt)
            except MaxPayloadError:  # (the limit was not known, or the server's is lower)
                refused = PayloadTooLarge(
                    f"this request ({len(attempt.body)} bytes) is larger than the bus carries",
                    param="body",
                )
                return refused.status, self.format.error(refused)
            except ApiError as exc:
                if passing(exc):  # a provider's 5xx, none reachable: sent again
                    return exc
                return exc.status, self.format.error(exc)
            finally:
                self._on_bus.pop(attempt.index, None)
            return 200, reply.body

    async def _key_hash(self) -> str:
        """The hash a line names its key by now: the key's current secret's."""
        key_hash = self.record.key_hash
        if self.current_hash is not None and key_hash:
            key_hash = await self.current_hash(key_hash)
        return key_hash

    async def _cancel_as_current(self, env: Envelope) -> None:
        """The cancel of a withdrawn line, sent again proved with the key's current secret's
        hash if the line went out under another one (in the second the runner's key records
        still held the old secret after a rotation): the head stamped the line with the
        current hash, and once the old secret's grace ended only that hash's proofs count,
        so the line, still queued, ran and was billed after the batch was cancelled."""
        if self.current_hash is None or not env.key_hash:
            return
        with contextlib.suppress(Exception):  # best effort, as every cancel
            await self.llm.cancel_as(env, await self._key_hash())

    async def _wait(self, why: ApiError, until: Awaitable[None]) -> None:
        """Wait for ``until``, counted among the batch's waiting lines and logged with
        ``why``; not at all once the runner is stopping (the line is then not sent again),
        and cut short by :meth:`stop_sending` (this holds nothing on the bus)."""
        if self._stopping:
            if asyncio.iscoroutine(until):
                until.close()
            return
        task = asyncio.current_task()
        self.waiting += 1
        if task is not None:
            self._resting.add(task)
        try:
            self._note_waiting(why)
            await until
        finally:
            self.waiting -= 1
            if task is not None:
                self._resting.discard(task)

    async def _over_budget(
        self, alias: str, place: object | None = None
    ) -> tuple[RateLimited | ServiceUnavailable | BudgetWait | Hold | None, int]:
        """The key's spent budget (the line ends with it), the reason it cannot be checked
        now (the line waits: a batch loses no line to a Valkey outage), a held budget (the
        line waits for the holds to drop), the hold the line goes with, or None; and the
        number of the answer among the batch's checks (see :meth:`_refused_since`)."""
        if self.budget is None:
            return None, self._checks
        try:
            key_hash = self.record.key_hash
            answer = await (
                self.budget(key_hash, alias)
                if place is None
                else self.budget(key_hash, alias, place)
            )
        except ServiceUnavailable as exc:
            return exc, self._checks  # says nothing of the budget
        self._checks += 1
        # The latest answer decides: a refusal, until a later check passes (budget raised).
        self._refused = (self._checks, answer) if isinstance(answer, RateLimited) else None
        return answer, self._checks

    def _refused_since(self, checked: int) -> RateLimited | None:
        """The budget refusal another line of the batch met after check number ``checked``
        passed, if no check has passed since: a line that waited for a slot after its own
        check is then not sent."""
        if self._refused is not None and self._refused[0] > checked:
            return self._refused[1]
        return None

    def _timed_out(self, times: int) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"no answer within batch.line_timeout_s ({self.settings.line_timeout_s:g} s), "
            f"{times} times (slow at the provider, or no capacity free that long); the line "
            "was given up"
        )

    def _note_waiting(self, failure: ApiError) -> None:
        """Say in the log why the batch's lines wait (once every :data:`WAITING_LOG_S`)."""
        self.waiting_for = f"{failure.status} {failure.code}: {failure.message}"
        now = time.monotonic()
        if now - self._waiting_logged >= WAITING_LOG_S:
            self._waiting_logged = now
            log.warning(
                "batch %s: %d lines wait to be sent again; the last was refused with %s",
                self.batch_id,
                self.waiting,
                self.waiting_for,
            )


def whole(body: dict[str, Any]) -> dict[str, Any]:
    """A line's request asked for one whole answer: a batch's result is a response body,
    never a stream, so ``"stream": true`` is turned off (not refused: the line runs as it
    would have unstreamed), and ``stream_options`` goes with it (a provider refuses it on a
    request that does not stream, OpenAI with a 400 the line would have as its result)."""
    kept = {name: value for name, value in body.items() if name != "stream_options"}
    return {**kept, "stream": False}


class _Attempt:
    """One line's request and what its attempts so far came to."""

    __slots__ = (
        "_line",
        "base",
        "body",
        "index",
        "request_id",
        "retries",
        "sent",
        "timeouts",
        "tries",
    )

    def __init__(
        self, *, index: int, request_id: str, body: bytes, base: int, retries: Retries
    ) -> None:
        self.index = index
        self.request_id = request_id
        self.body = body
        self.base = base  # the first attempt number of this run (see ``generation``)
        self.tries = 0  # attempts sent again
        self.retries = retries  # why they were, and when it is given up (see retries)
        self.timeouts = 0  # attempts a provider worked on and did not answer in time
        self.sent = False  # the latest attempt went on the bus
        self._line: tuple[KeyHolds, object] | None = None  # its place among waiting lines

    @property
    def place(self) -> object | None:
        return self._line[1] if self._line is not None else None

    def wait_in_line(self, holds: KeyHolds) -> None:
        """Take a place among the key's waiting lines (once: it keeps it while it waits)."""
        if self._line is None:
            self._line = (holds, holds.queue())

    def stop_waiting(self) -> None:
        if self._line is not None:
            holds, place = self._line
            self._line = None
            holds.leave(place)


class _Watch:
    """What one attempt showed of its line's way through the platform."""

    __slots__ = ("provider_worked",)

    def __init__(self) -> None:
        self.provider_worked = False

    def saw_keepalive(self) -> None:  # a model-proxy is calling the provider
        self.provider_worked = True

    def moved(self) -> None:
        """A reroute put the line back in a queue: no provider works on it (it counted as
        working, so a cancelled batch ran it on the fallback)."""
        self.provider_worked = False
