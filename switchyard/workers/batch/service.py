"""``switchyard serve batch``: runs OpenAI Batch API jobs on capacity nothing else wants.

It follows the batch records in ``sy_batches`` (CLIENT) and runs each active one as a
:class:`~switchyard.workers.batch.job.Job`: validate the input file, send its lines at
``batch`` priority as the key that created the batch (each after a check of that key's
budget: :mod:`~switchyard.workers.batch.budget`), write ``request_counts`` as lines
finish, then the output and error files. Every step is idempotent, so a runner that stops (or
is killed) at any point picks each batch up again where its recorded results end. A stop
(SIGTERM) sends no line any more and gives the lines on the bus the stop grace to be answered
and recorded (:meth:`BatchRunner.stop`). Only the runner holding the runner lease runs batches
(:mod:`~switchyard.workers.batch.leader`): two would send each line twice, billed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import get_args

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from switchyard.bus import identities
from switchyard.client import LLMClient
from switchyard.config import Settings
from switchyard.errors import AuthenticationFailed, BusError, ObjectDamaged, ServiceUnavailable
from switchyard.runtime import semconv as sc
from switchyard.runtime.batchrecords import BatchRecords
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.shutdown import STOP_STEP_S, within
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas import batches as b
from switchyard.workers.batch import batch_errors, expiry, formats, orphans
from switchyard.workers.batch.budget import BatchBudget, KeyRecords
from switchyard.workers.batch.inputs import BatchInput, InputGone, Invalid
from switchyard.workers.batch.job import Job
from switchyard.workers.batch.leader import LEASE_TTL_S, Leadership
from switchyard.workers.batch.output import OutputFiles
from switchyard.workers.batch.slots import FairSlots
from switchyard.workers.batch.usage import Tally

log = logging.getLogger("switchyard.batch")
# Statuses in which a runner sends no more lines of a batch: a cancel, or its end.
_STOPPED = frozenset({"cancelling"}) | b.ENDED

RETRY_PAUSE_S = 2.0
# Beyond a line's deadline, how long a cancelled batch waits for its lines' answers to be
# recorded (the store's own timeouts end a write well within it).
CANCEL_SLACK_S = 30.0


class BatchRunner:
    def __init__(
        self, nc: NATS, settings: Settings, proc: Process, *, lease_ttl: float = LEASE_TTL_S
    ) -> None:
        self.settings = settings
        self.store = BatchStore(nc)
        # A line's answer stays one message's worth (its output row is held whole): larger
        # ones are the line's 413 ``answer_too_large``, as before parts (bus/parts.py).
        self.llm = LLMClient(
            nc, attempts=1, default_timeout=settings.batch.line_timeout_s, max_answer_bytes=0
        )
        self.slots = FairSlots(settings.batch.max_in_flight)
        self.budget = BatchBudget(nc, settings)
        # Whether a running batch's key was revoked or deleted: read apart from the budget's
        # copies, whose age decides when a raised budget applies to the next line.
        self.keys = KeyRecords(nc)
        self._nc = nc  # its max_payload, as the server it is connected to says
        self._records = BatchRecords(nc.jetstream(timeout=10), self._changed)
        # The task running each active batch, and the job of those sending lines now.
        self._running: dict[str, asyncio.Task[None]] = {}
        self._driving: dict[str, Job] = {}
        self._stopping = False
        self.leader = Leadership(nc, proc.instance, self._lead, ttl=lease_ttl)
        self._jobs = TaskSupervisor("batch-jobs")
        self._sweeper = TaskSupervisor("batch-sweep")
        lines = proc.metrics.counter(
            sc.BATCH_LINES, "Batch lines answered, by result.", [sc.RESULT]
        )
        self._lines = {ok: lines.labels("completed" if ok else "failed") for ok in (True, False)}
        proc.metrics.gauge_callback(
            sc.BATCHES,
            "Batches by status.",
            ["status"],
            self._by_status,
        )
        proc.metrics.gauge_callback(
            sc.BATCH_RUNNER_LEASE_HELD,
            "1 while this runner holds the batch runner lease (it runs the batches), else 0.",
            (),
            lambda: [((), 1.0 if self.leader.holding else 0.0)],
        )
        self.ready = False

    def _by_status(self) -> list[tuple[tuple[str, ...], float]]:
        counts = dict.fromkeys(get_args(b.BatchStatus), 0)
        for record in self._records.values():
            counts[record.batch.status] = counts.get(record.batch.status, 0) + 1
        return [((status,), float(n)) for status, n in counts.items()]

    async def start(self) -> None:
        await self.llm.start()
        await self._records.start()  # (no batch runs before the lease is held)
        await self.leader.start()
        self._sweeper.spawn(self._sweep_forever())
        self.ready = True  # (holding the lease or not: a runner waiting for it is healthy)

    def _lead(self, holding: bool) -> None:
        """Taken: run every active batch (a job still draining since a loss sends again).
        Lost: send no line more."""
        if holding:
            for job in self._driving.values():
                if not self._stopping:
                    job.resume_sending()
            for record in self._records.values():
                self._changed(record.batch.id, record)
        else:
            self._stop_sending()

    def _stop_sending(self) -> None:
        for batch_id, task in self._running.items():
            job = self._driving.get(batch_id)
            if job is not None:
                job.stop_sending()
            else:
                task.cancel()

    def _paused(self) -> bool:
        """Whether no batch may go on now: the runner stops, or does not hold the lease."""
        return self._stopping or not self.leader.holding

    async def stop(self, grace: float) -> None:
        """Send no line any more, and give the lines on the bus up to ``grace`` seconds to be
        answered and recorded, as the edge lets its requests finish: a line cut is billed as
        a stopped call, then runs (and is billed) again after the restart. What is still
        unanswered when the grace runs out is cut all the same, and sent again by the next
        runner. A batch sending no line right now (checking its input, writing its files,
        pausing after a failure) stops at once: the next runner does that step again."""
        self.ready = False
        self._stopping = True
        # The lines first: nothing waited for before them may let another one go out.
        self._stop_sending()
        # Then the sweep, for a bounded time: one whose cancel was swallowed (Python 3.11's
        # wait_for in nats-py) ends after its pass (see _sweep_forever); waited for without
        # bound, it held the stop, lines still going out, until the runner was killed.
        await within(STOP_STEP_S, self._sweeper.cancel_all(), "the batch sweep's stop")
        cut = await self._jobs.drain(grace)  # (the records' watch tells of cancels meanwhile)
        if cut:
            log.warning(
                "%d batches were still at work after the %.1f s stop grace (lines unanswered, "
                "or files being written): cut; the next runner sends those lines again and "
                "writes the files",
                cut,
                grace,
            )
        # Given up once the lines are answered (renewed meanwhile): the next runner, waiting
        # for it, sends only the lines that have no answer recorded.
        await self.leader.stop()
        await self._records.stop()
        await self.llm.close()
        await self.budget.close()
        await self.keys.close()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep(time.time())
            except Exception:  # the store is unreachable: nothing is lost by waiting
                log.exception("sweeping expired batch files and records failed; trying later")
            if self._stopping:  # its cancel came and was swallowed (see stop): end here
                return
            await asyncio.sleep(self.settings.batch.sweep_s)

    async def sweep(self, now: float) -> tuple[list[str], list[str]]:
        """Delete the files that expired and the records of batches that ended
        ``batch.finished_batch_ttl_s`` ago (see :func:`expiry.due`); returns their ids. Also
        purges the markers their owners' deletes left, so a deleted file or message batch
        leaves nothing in the bucket (the edges may delete, only the runner purges), and the
        chunks of files whose writer was killed half-way."""
        files, records, markers, legacy = await self.store.contents()
        owners = {f.file.id: f.owner for f in files}
        owners.update((r.batch.id, r.owner) for r in records)
        gone_files, gone_batches = expiry.due(
            files, records, now, self.settings.batch.finished_batch_ttl_s
        )
        for file_id in gone_files:
            await self.store.expire_file(file_id, owners[file_id])
        for batch_id in gone_batches:
            await self.store.forget(batch_id, owners[batch_id])
            self._records.drop(batch_id)
        gone = {*gone_files, *gone_batches}
        moved = await self.store.move_legacy(e for e in legacy if b.id_of(e[0]) not in gone)
        await self.store.purge_markers(markers)
        try:
            dead = await self.store.purge_dead_chunks(now, self.settings.batch.dead_chunks_after_s)
        except (BusError, NatsError, TimeoutError) as exc:  # purge nothing; try next time
            log.warning("left the files store's unnamed chunks for the next sweep: %r", exc)
            dead = 0
        if gone_files or gone_batches or markers or moved or dead:
            log.info(
                "deleted %d expired files and %d batch records; purged %d delete markers; "
                "moved %d records to their owner keys; purged the chunks of %d files a "
                "writer left half-written",
                len(gone_files),
                len(gone_batches),
                len(markers),
                moved,
                dead,
            )
        return gone_files, gone_batches

    def _changed(self, batch_id: str, record: b.BatchRecord | None) -> None:
        if record is None:
            return
        if self._paused():  # (the lease's holder takes it up)
            return
        if record.batch.status in b.ACTIVE and batch_id not in self._running:
            self._running[batch_id] = self._jobs.spawn(
                self._run(batch_id), name=f"batch-{batch_id}"
            )

    def _owner(self, batch_id: str) -> str:
        """Whose batch it is (its store calls need it); "" once the record is gone, which no
        record's owner is, so the calls find nothing."""
        record = self._records.get(batch_id)
        return record.owner if record is not None else ""

    def _status(self, batch_id: str) -> str:
        record = self._records.get(batch_id)
        return record.batch.status if record is not None else "cancelled"

    async def _run(self, batch_id: str) -> None:
        cleared: set[str] = set()  # (orphans withdrawn: once, not on each pass after a failure)
        try:
            while self._status(batch_id) in b.ACTIVE:
                try:
                    if await self._run_once(batch_id, cleared):
                        return
                except Exception:  # a store or bus failure: the batch resumes after a pause
                    log.exception("batch %s interrupted; resuming", batch_id)
                if self._paused():  # the next runner (the lease's holder) sends what is left
                    return
                await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            self._running.pop(batch_id, None)

    async def _run_once(self, batch_id: str, cleared: set[str]) -> bool:
        """One pass: True once the batch reached a final status."""
        if self._paused():
            return False
        found = await self.store.get(batch_id, self._owner(batch_id))
        if found is None:
            return True
        record, _ = found
        source = BatchInput(self.store, record.batch.input_file_id, record.batch.endpoint)
        checked = await self._check(batch_id, source, record.batch.status == "validating")
        if checked is None:
            return True
        total, model = checked
        now = int(time.time())

        def claim(r: b.BatchRecord) -> b.BatchRecord:
            batch = r.batch
            if batch.status == "validating":
                batch = msgspec.structs.replace(batch, status="in_progress", in_progress_at=now)
            counts = msgspec.structs.replace(batch.request_counts, total=total)
            batch = msgspec.structs.replace(batch, request_counts=counts, model=model)
            return msgspec.structs.replace(r, batch=batch, generation=r.generation + 1)

        claimed = await self.store.update(batch_id, record.owner, claim)
        if claimed is None:
            return True
        self._records.note(claimed)
        fmt = formats.for_endpoint(claimed.batch.endpoint)
        if claimed.batch.status == "cancelling" and claimed.generation > 1 and not cleared:
            await self._withdraw_orphans(claimed, fmt, total)  # (a run before left them)
            cleared.add(batch_id)
        refused = await self._key_refusal(claimed)
        if claimed.batch.status == "in_progress" and refused is None:
            done, usage = await self._recorded(batch_id, fmt)
            job = Job(
                claimed,
                source,
                total,
                store=self.store,
                llm=self.llm,
                settings=self.settings.batch,
                slots=self.slots,
                # Ended too: a runner that lost the lease may see the holder end it. The lease
                # is checked line by line: lost, no line more goes out; held with no margin
                # left (a late renewal), each line waits for a renewal (`pause`).
                cancelled=lambda: self._status(batch_id) in _STOPPED or not self.leader.holding,
                pause=self.leader.wait_held,
                on_line=lambda ok: self._lines[ok].inc(),
                max_payload=self._nc.max_payload,
                budget=self.budget.admit,
                usage=usage if fmt.sums_usage else None,
                current_hash=self._current_hash,
            )
            refused = await self._drive(job, done)
            # The job counts every line with a recorded answer (those before it, and each it
            # recorded), so no second read of every answer is needed to know what is missing.
            missing = job.completed + job.failed < total
            if not self.leader.holding or (self._stopping and missing):
                # The lease lost (its holder writes the files; a stopping runner too: two
                # writing one batch's files replaced a whole output with a partial one), or
                # stopped before every line ran: the next runner does the rest.
                return False
            running = self._status(batch_id) == "in_progress" and not self._expired(claimed)
            if missing and running and refused is None:
                return False  # some lines failed to run: another pass sends them again
        await self._finalize(batch_id, source, total, refused)
        return True

    async def _finalizing(self, record: b.BatchRecord, now: int) -> b.BatchRecord:
        """The batch marked ``finalizing`` (``finalizing_at``: ``now``) while its files are
        written, as OpenAI shows a batch whose lines all ran; as it is when it is already."""
        if record.batch.status == "finalizing":
            return record

        def mark(r: b.BatchRecord) -> b.BatchRecord | None:
            if r.batch.status != "in_progress":
                return None
            batch = msgspec.structs.replace(r.batch, status="finalizing", finalizing_at=now)
            return msgspec.structs.replace(r, batch=batch)

        updated = await self.store.update(record.batch.id, record.owner, mark)
        if updated is None:
            return record
        self._records.note(updated)
        return updated

    async def _current_hash(self, key_hash: str) -> str:
        """The hash of the key's current secret, for a batch made with the secret hashed
        ``key_hash`` (the same after no rotation); that one when the key is gone or its
        record cannot be read now (the head answers the line)."""
        try:
            key = await self.keys.get(key_hash)
        except ServiceUnavailable:
            return key_hash
        return key.hash if key is not None and key.hash else key_hash

    async def _key_refusal(self, record: b.BatchRecord) -> AuthenticationFailed | None:
        """The error an HTTP request of the batch's key gets now, if the key was revoked or
        deleted (the batch then ends: see :meth:`_drive`); None while it may run, when its
        record cannot be read right now (asked again a round later), and for an expired key
        (its lines are refused one by one by the head, as documented)."""
        if not record.key_hash:
            return None
        try:
            key = await self.keys.get(record.key_hash)
        except ServiceUnavailable:
            return None
        if key is None:
            return AuthenticationFailed("This API key has been deleted.")
        if key.disabled:
            return AuthenticationFailed("This API key has been revoked.", code="api_key_revoked")
        return None

    async def _check(
        self, batch_id: str, source: BatchInput, validating: bool
    ) -> tuple[int, str | None] | None:
        """How many requests the batch's input holds and the model they name (read through
        once, not kept); None when the batch failed for its input."""
        try:
            return await source.check(validating=validating)
        except InputGone as exc:  # deleted after the batch was created (the edge refuses it)
            await self._fail(batch_id, [batch_errors.input_gone(str(exc))])
        except ObjectDamaged as exc:  # the store's leader lacks its bytes: no retry helps
            await self._fail(batch_id, [batch_errors.input_damaged(source.file_id, exc)])
        except Invalid as exc:
            await self._fail(batch_id, exc.errors)
        return None

    async def _withdraw_orphans(self, record: b.BatchRecord, fmt: formats.Format, n: int) -> None:
        """Cancel the lines of a cancelled batch an earlier run may have left on the bus
        (:mod:`~switchyard.workers.batch.orphans`): those still queued are dropped unserved."""
        done, _ = await self._recorded(record.batch.id, fmt)
        lines = orphans.unanswered(n, done, self.settings.batch.max_in_flight)
        hashes = [record.key_hash, await self._current_hash(record.key_hash)]
        sent = await orphans.withdraw(
            self._nc, record.batch.id, lines, hashes, self.settings.batch.line_timeout_s
        )
        log.info("batch %s cancelled: %d cancels of lines left queued", record.batch.id, sent)

    async def _recorded(self, batch_id: str, fmt: formats.Format) -> tuple[dict[int, bool], Tally]:
        """Which lines have a result, and whether it is a success, and their summed usage
        (not the results: a large batch's would fill the runner's memory)."""
        done: dict[int, bool] = {}
        usage = Tally()
        async for index, result in self.store.line_results(batch_id):
            if index not in done:  # (a line's result is one entry: read twice, it is one)
                usage.add(result)
            done[index] = fmt.ok(result)
        return done, usage

    async def _drive(self, job: Job, done: dict[int, bool]) -> AuthenticationFailed | None:
        """Run ``job`` while writing its progress. A cancel stops the sending, and withdraws
        the lines on the bus that no provider is known to be working on (:meth:`Job.withdraw`:
        those waiting in a deployment's queue are dropped there, neither run nor billed). The
        lines a provider works on run on (and are billed) anyway, so their answers are waited
        for and recorded, for at most one line's deadline and a little more.

        A key revoked or deleted meanwhile stops everything at once, as it ends the key's HTTP
        requests: every line in flight is cancelled (a provider call stops, billed what it
        cost) and nothing more is sent; returns the error the key now gets (None otherwise).
        """
        self._driving[job.batch_id] = job
        if self._paused():  # (stop() or a lost lease saw no job of this batch)
            job.stop_sending()
        run = asyncio.ensure_future(job.run(done))
        stop_by: float | None = None
        refused: AuthenticationFailed | None = None
        try:
            while not run.done():
                await asyncio.wait({run}, timeout=self.settings.batch.progress_s)
                refused = await self._key_refusal(job.record)
                if refused is not None:
                    log.info("batch %s: its key is gone (%s); ending it", job.batch_id, refused)
                    break
                status = self._status(job.batch_id)
                if status in _STOPPED:
                    # Each round: a line sent just as the cancel came is withdrawn at the next.
                    # (Ended too: a runner that lost the lease may see the holder end it.)
                    withdrawn = job.withdraw()
                    if stop_by is None:
                        stop_by = time.monotonic() + self.settings.batch.line_timeout_s
                        stop_by += CANCEL_SLACK_S
                        log.info(
                            "batch %s %s: withdrew %d lines not started at a provider",
                            job.batch_id,
                            # (not "cancelled" when another runner ended it: completed)
                            "cancelled" if status == "cancelling" else f"{status} elsewhere",
                            withdrawn,
                        )
                await self._progress(job)
                if stop_by is not None and time.monotonic() >= stop_by and not run.done():
                    log.warning("batch %s: lines still unanswered after its cancel", job.batch_id)
                    run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                if refused is not None:
                    run.cancel()  # (each line's request, closed, sends its llm.v1.cancel)
                await run
        finally:
            self._driving.pop(job.batch_id, None)
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        return refused

    async def _progress(self, job: Job) -> None:
        if not self.leader.holding:  # the holder writes the counts: two writers made them jump
            return
        # Both taken now, together: a line recorded while the write waits adds to each at once
        # (Job._line), so reading the usage later would count a line the counts do not yet.
        counts = b.RequestCounts(total=job.total, completed=job.completed, failed=job.failed)
        summed = job.usage.usage() if job.usage is not None else None

        def write(r: b.BatchRecord) -> b.BatchRecord | None:
            if r.batch.status not in b.ACTIVE:  # ended (by another runner): its counts are final
                return None
            usage = summed if job.usage is not None else r.batch.usage
            if r.batch.request_counts == counts and r.batch.usage == usage:
                return None
            batch = msgspec.structs.replace(r.batch, request_counts=counts, usage=usage)
            return msgspec.structs.replace(r, batch=batch)

        updated = await self.store.update(job.batch_id, job.record.owner, write)
        if updated is not None:
            self._records.note(updated)

    @staticmethod
    def _expired(record: b.BatchRecord) -> bool:
        expires = record.batch.expires_at
        return expires is not None and time.time() >= expires

    async def _fail(self, batch_id: str, errors: list[b.BatchErrorItem]) -> None:
        now = int(time.time())

        def failed(r: b.BatchRecord) -> b.BatchRecord:
            batch = msgspec.structs.replace(
                r.batch, status="failed", failed_at=now, errors=b.BatchErrors(data=errors)
            )
            return msgspec.structs.replace(r, batch=batch)

        await self.store.update(batch_id, self._owner(batch_id), failed)
        log.info("batch %s failed validation: %s", batch_id, errors[0].message)

    def _ending(
        self, record: b.BatchRecord, refused: AuthenticationFailed | None
    ) -> tuple[str, b.BatchErrors | None, AuthenticationFailed | None]:
        """How an active batch ends: its final status, its ``errors``, and why its lines that
        never ran were refused (``refused``, its key's error, kept only when it fails for it)."""
        status, errors = record.batch.status, record.batch.errors
        if status == "finalizing":  # every line ran: it completes whatever became of its key
            return "completed", errors, None
        if refused is not None:
            return "failed", b.BatchErrors(data=[batch_errors.key_gone(refused)]), refused
        if status == "cancelling":
            return "cancelled", errors, None
        return ("expired" if self._expired(record) else "completed"), errors, None

    async def _finalize(
        self,
        batch_id: str,
        source: BatchInput,
        total: int,
        refused: AuthenticationFailed | None = None,
    ) -> None:
        """Write the output and error files from the recorded results, then the final status:
        ``failed`` when the batch's key was revoked or deleted (``refused``: the error row of
        every line that never ran, and the batch's ``errors``).

        Idempotent: file ids derive from the batch id, so a pass interrupted here rewrites the
        same files.
        """
        found = await self.store.get(batch_id, self._owner(batch_id))
        if found is None:
            return
        record, _ = found
        status = record.batch.status
        if status not in b.ACTIVE:  # finished by an earlier pass whose answer went missing
            with contextlib.suppress(Exception):  # that pass's last step, maybe not taken
                await self.store.forget_lines(batch_id)
            return
        final, errors, refused = self._ending(record, refused)
        now = int(time.time())
        if final == "completed":  # OpenAI's finalizing: every line ran, the files are written
            record = await self._finalizing(record, now)
            now = record.batch.finalizing_at or now
        fmt = formats.for_endpoint(record.batch.endpoint)
        done = formats.Assembly(fmt, batch_id, total, final, refused)
        usage = Tally()  # (summed again from every result: what the runs wrote is not added)
        lifetime = record.output_expires_s or self.settings.batch.file_expiry_s
        files = OutputFiles(self.store, record, fmt, lifetime, now)
        try:
            async with contextlib.aclosing(self.store.line_results(batch_id)) as results:
                async for index, result in results:
                    placed = done.result(index, result)
                    if placed is not None:
                        usage.add(result)
                        await files.add(*placed)
            if not done.every_line_answered:  # rows for the lines that never ran
                async with contextlib.aclosing(source.lines()) as lines:
                    async for index, line in lines:
                        placed = done.unrun(index, line)
                        if placed is not None:
                            await files.add(*placed)
            output_id, error_id = await files.close()
        except BaseException:  # this pass runs again from the start: no half files left
            await files.abort()
            raise
        # The files' created_at is the final stamp (or finalizing_at): the record keeps it.
        if final == "completed":
            now = int(time.time())
        counts = b.RequestCounts(total=total, completed=done.completed, failed=done.failed)

        def finish(r: b.BatchRecord) -> b.BatchRecord | None:
            if r.batch.status not in b.ACTIVE:  # ended meanwhile (an earlier pass): as it is
                return None
            batch = msgspec.structs.replace(
                r.batch,
                status=final,
                request_counts=counts,
                usage=usage.usage() if fmt.sums_usage else r.batch.usage,
                output_file_id=output_id,
                error_file_id=error_id,
                errors=errors,
                **{b.ENDED_AT[final]: now},
            )
            return msgspec.structs.replace(r, batch=batch)

        updated = await self.store.update(batch_id, record.owner, finish)
        if updated is not None:
            self._records.note(updated)
        with contextlib.suppress(Exception):  # only tidying: the output files hold the results
            await self.store.forget_lines(batch_id)
        log.info(
            "batch %s %s: %d completed, %d failed", batch_id, final, done.completed, done.failed
        )


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.BATCH.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc, proc: BatchRunner(nc, settings, proc),
    )
