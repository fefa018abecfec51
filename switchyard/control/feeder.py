"""The feeder: moves held requests into dispatch, in fair order, exactly when a slot frees.

While a deployment has free slots, heads dispatch straight to it and the feeder only
publishes the deployment's ``sy_sched`` record (heads alive, time per request). Once a request
lands in HOLD (a head found the deployment busy), the feeder takes over that deployment:

1. it reads the dispatch consumer's state once (waiting + in flight = slots taken) and starts
   listening to the deployment's acknowledgements (``$JS.ACK.DISPATCH.dep-<id>.>``: each one a
   freed slot; a server-side tap, so model-proxies send nothing extra);
2. it reads every held request with its own consumer and queues it in a :class:`FairQueue`;
3. while a slot is free, it pops the next request (strict priority, weighted DRR by tenant),
   stores it in dispatch under the held message's ``Nats-Msg-Id`` and only then removes it from
   HOLD, so a crash between the two is deduplicated by dispatch, never lost or doubled. Removal
   is batched (:mod:`switchyard.control.holdpurge`): one purge per tenant subject removes
   everything below the oldest request of that subject still waiting or moving;
4. while anything is left waiting it marks the deployment ``held`` so every head parks new
   requests in HOLD too (none jumps the fair order); once HOLD is empty and a slot is free it
   clears the mark and the fast path resumes. Once a second it re-reads the consumer state,
   which corrects any count the taps missed;
5. while the deployment holds ``streams.hold_total_limit`` requests or more it also marks the
   record ``full`` (:mod:`switchyard.control.holdbound`), and heads refuse new requests with
   503 ``queue_full`` instead of holding them: one write when the count crosses the limit and
   one when it falls back below the clear mark, never one per request.

A deployment can also fill up without any request reaching HOLD: heads cap what they send
straight to dispatch by the deployment's *last measured* time per request, so when a provider
stalls (or has never been measured, or has fewer slots than there are heads) a steady stream
under each head's cap can pile up in dispatch, first come first served. So once a second the
feeder also looks at the monitor's last read of each dispatch queue: more than one request per
head waiting there (beyond the slots in flight) marks the deployment ``held`` as well, and it
stays held until dispatch is back within that slack. New requests then wait in HOLD, in fair
order, behind at most what was already in dispatch.

Nothing here is durable but HOLD itself: a restarted feeder reads HOLD from the start with a
new consumer and carries on; DRR deficits start from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.bus.direct import DirectDelivery
from switchyard.bus.flow_control import quiet_flow_control
from switchyard.config import IngressSettings
from switchyard.control import heldviews
from switchyard.control.fairqueue import FairQueue
from switchyard.control.feedwindow import Window
from switchyard.control.held import Held, read_held, sequence_and_time
from switchyard.control.heldexpiry import TRIES, Taken, expire
from switchyard.control.holdbound import full_mark
from switchyard.control.holdpurge import PURGE_BATCH, HoldPurger
from switchyard.control.mover import Mover
from switchyard.errors import BusError
from switchyard.runtime import semconv as sc
from switchyard.runtime.definitions import DRAIN_ACK_PENDING
from switchyard.runtime.jetstream import StreamRejected
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor
from switchyard.schemas import monitor as m
from switchyard.schemas.routing import RouteTable
from switchyard.schemas.scheduling import (
    NOT_FULL,
    PRIORITIES,
    SCHED_ENCODER,
    FullMark,
    SchedState,
)

log = logging.getLogger("switchyard.control.feeder")

TICK_S = 1.0
HOLD_HEARTBEAT_S = 1.0
# A record is written when it changes; heads take the lease as the feeder's heartbeat, so this
# slow rewrite only restores a record someone removed from the bucket by hand.
REWRITE_S = 300.0
# streams.hold_total_limit's default (control passes the configured value).
DEFAULT_HOLD_LIMIT = 10_000
# Expired held requests deleted from HOLD side by side, at most (each one API request).
EXPIRING_AT_ONCE = 16
# An expired held request whose delete HOLD did not answer (a stream leader election, a denied
# permission: timeouts, no responders) stays in HOLD, unanswered, and its delete is tried again
# from the tick for this long from its first send; only then is it given up (left to its
# caller's own timeout) and purged with the rest.
DELETE_RETRY_S = 30.0
# ... or until this many moved requests of its tenant subject wait behind it for a purge (they
# stay in HOLD and count against streams.hold_tenant_limit while purges stop below it).
DELETE_BLOCKS_AT_MOST = PURGE_BATCH
_NOT_DONE = (b"-NAK", b"+WPI")  # a nak or progress report frees no slot


@dataclass(slots=True)
class _Deployment:
    id: str
    queue: FairQueue[Held] = field(default_factory=FairQueue)
    seen: set[int] = field(default_factory=set)
    pending: int = 0  # slots taken: dispatch waiting + in flight
    active: bool = False  # counting slots (consumer state read, acks tapped)
    acks: Subscription | None = None
    held: bool = False  # what the sched record says
    full: FullMark = NOT_FULL  # the record's hold bound mark (see holdbound)
    written: SchedState | None = None
    pumping: bool = False
    dirty: bool = False
    moving: int = 0  # moves started, not yet stored in dispatch (not in the consumer's count)
    # A move failed: no more until the retry half a second later (a move that fails at once,
    # disconnected with a full buffer, would otherwise be retried in a busy loop).
    stalled: bool = False
    retry: asyncio.TimerHandle | None = None
    window: Window = field(default_factory=Window)
    # Expired requests whose delete from HOLD got no answer, with when it was first tried (the
    # loop's clock): tried again from the tick (see DELETE_RETRY_S).
    undeleted: list[tuple[Held, float]] = field(default_factory=list)


class Feeder:
    """See the module docstring. ``heads`` and ``latency`` come from the monitor."""

    def __init__(
        self,
        nc: NATS,
        metrics: Metrics,
        table: Callable[[], RouteTable],
        heads: Callable[[], int],
        latency: Callable[[str], float | None],
        *,
        backlog: Callable[[str], int] | None = None,
        queue_limit: int = 1_000_000,
        hold_limit: int = DEFAULT_HOLD_LIMIT,
        ingress: IngressSettings | None = None,
    ) -> None:
        self._nc = nc
        self._ingress = ingress or IngressSettings()  # names a bus caller's deadline in a 504
        self._js: JetStreamContext = nc.jetstream(timeout=5)
        self._direct: DirectDelivery | None = None  # attached once, at the first start
        self._mover: Mover | None = None
        self._running = False  # between start and stop (leadership can come and go)
        self._table = table
        self._heads = heads
        self._latency = latency
        # Requests waiting in a dispatch queue (the monitor's last read); None: not watched.
        self._backlog = backlog
        self._heads_seen = 1
        self._deps: dict[str, _Deployment] = {}
        self._kv: KeyValue | None = None
        self._hold_sub: Subscription | None = None
        self._loops = TaskSupervisor("feeder")
        self._work = TaskSupervisor("feeder-moves")
        self._purger = HoldPurger(nc, self._forget)
        self._expiring = asyncio.Semaphore(EXPIRING_AT_ONCE)
        # Held requests whose deadline passed, answered 504 by this process (by deployment and
        # priority): kept across runs, so the counter never goes back.
        self._expired: dict[tuple[str, str], int] = {}
        self._moves: dict[tuple[str, str], int] = {}  # moved into dispatch: the same
        self._concurrency: dict[str, int] = {}
        self._concurrency_of: RouteTable | None = None
        # Dispatch holds at most this many per deployment (discard-new): never move past it.
        self._queue_limit = queue_limit
        # Requests one deployment may hold (every tenant and class) before heads refuse more.
        self._hold_limit = max(1, hold_limit)
        self._export(metrics)

    # ---- lifecycle ----

    async def start(self) -> None:
        if self._direct is None:
            self._direct = await DirectDelivery.attach(self._nc)
        self._mover = Mover(self._nc, self._direct)
        await self._mover.start()
        self._running = True
        self._kv = await self._js.key_value(subjects.SCHED_BUCKET)
        self._heads_seen = max(1, self._heads())
        for dep_id in self._table().deployments():
            await self._write(self._dep(dep_id))
        # The ordered consumer lives on one node; nats-py re-creates it after two missed
        # heartbeats, so a node loss stalls held requests for 2 s rather than the default 10.
        self._hold_sub = await self._js.subscribe(
            subjects.HOLD_ALL,
            stream=subjects.HOLD_STREAM,
            ordered_consumer=True,
            idle_heartbeat=HOLD_HEARTBEAT_S,
            cb=self._on_held,
        )
        quiet_flow_control(self._hold_sub)
        self._loops.spawn(self._tick_forever())

    async def stop(self) -> None:
        self._running = False  # from here no deployment is fed, kicked or retried
        await self._loops.cancel_all()
        if self._hold_sub is not None:
            with contextlib.suppress(Exception):
                await self._hold_sub.unsubscribe()
            self._hold_sub = None
        await self._work.drain(2.0)  # first: a pump may still be tapping a deployment's acks
        for dep in self._deps.values():
            await self._deactivate(dep)
            if dep.retry is not None:
                dep.retry.cancel()
        if self._mover is not None:
            await self._mover.stop()  # moves still in flight hear how they went
            self._mover = None
        await self._purger.close(connected=self._nc.is_connected)
        # Ready to start again (leadership may come back): a new start reads HOLD afresh.
        self._deps = {}
        self._loops = TaskSupervisor("feeder")
        self._work = TaskSupervisor("feeder-moves")

    # ---- state ----

    def _dep(self, dep_id: str) -> _Deployment:
        dep = self._deps.get(dep_id)
        if dep is None:
            dep = self._deps[dep_id] = _Deployment(dep_id)
        return dep

    def concurrency(self, dep_id: str) -> int:
        table = self._table()
        if table is not self._concurrency_of:
            self._concurrency_of = table
            self._concurrency = {
                d: deployment.concurrency or provider.concurrency
                for d, (provider, deployment) in table.deployments().items()
            }
        # A deployment no longer routed: everything held for it goes to its queue at once,
        # where the model-proxies hand each request back to the heads (no slot to wait for).
        return min(self._concurrency.get(dep_id, DRAIN_ACK_PENDING), self._queue_limit)

    # ---- held requests in ----

    async def _on_held(self, msg: Msg) -> None:
        parts = msg.subject.split(".", 5)
        if len(parts) != 6:
            return
        _, _, _, dep_id, priority, tenant = parts
        seq, stored_at = sequence_and_time(msg)
        dep = self._dep(dep_id)
        if seq in dep.seen:
            return  # the ordered consumer re-read it after a reset
        held = read_held(
            msg, seq=seq, stored_at=stored_at, deployment=dep_id, priority=priority, tenant=tenant
        )
        dep.seen.add(seq)
        self._purger.read(msg.subject, dep_id, seq)
        dep.queue.push(priority, tenant, held.weight, held)
        self._feed(dep)

    # ---- moving ----

    def _current(self, dep: _Deployment) -> bool:
        """Whether ``dep`` is fed: the feeder runs and ``dep`` is not from a run before (a
        stopped feeder's timers and taps must not move its stale queue through a new run)."""
        return self._running and self._deps.get(dep.id) is dep

    def _kick(self, dep: _Deployment) -> None:
        """Fill free slots in a task (from timers and the tick)."""
        if not self._current(dep):
            return
        dep.dirty = True
        if not dep.pumping:
            dep.pumping = True
            self._work.spawn(self._pump(dep))

    def _feed(self, dep: _Deployment) -> None:
        """Fill free slots right away (a held request came in, a slot freed: the usual case,
        with no task of its own), unless the deployment must be activated first or is being fed
        already; a change of its record goes to a task."""
        if not self._current(dep):
            return
        if dep.pumping or (len(dep.queue) and not dep.active):
            self._kick(dep)
            return
        dep.pumping = True
        dep.dirty = False
        try:
            changed = self._fill(dep)
        except Exception:  # the tick retries
            log.exception("feeding deployment %s failed", dep.id)
            changed = False
        finally:
            dep.pumping = False
        if changed or dep.dirty:  # the record must change, or more came in meanwhile
            self._kick(dep)

    async def _pump(self, dep: _Deployment) -> None:
        try:
            while dep.dirty and self._current(dep):
                dep.dirty = False
                if not dep.active and (len(dep.queue) or self._overfull(dep.id)):
                    await self._activate(dep)  # only here: one pump per deployment at a time
                self._fill(dep)
                written = dep.written
                if written is None or written.held != dep.held or written.full != dep.full:
                    await self._write(dep)
        except Exception:  # a failed pass leaves the requests held; the tick retries
            log.exception("feeding deployment %s failed", dep.id)
        finally:
            dep.pumping = False

    def _fill(self, dep: _Deployment) -> bool:
        """Start moves while a slot is free; True if the ``held`` or ``full`` mark changed."""
        limit = self.concurrency(dep.id)
        now = time.time()
        while dep.pending < limit and not dep.stalled:
            item = dep.queue.pop()
            if item is None:
                break
            if item.expired(now):  # no slot for it: its caller hears why
                self._expire(item)
                continue
            dep.pending += 1  # the slot is taken now; moves run side by side
            self._move(dep, item)
        saturated = self._saturated(dep, limit)
        full = full_mark(len(dep.queue), dep.full, self._hold_limit)
        if saturated == dep.held and full == dep.full:
            return False
        dep.held, dep.full = saturated, full
        return True

    def _slack(self) -> int:
        """Requests dispatch may hold beyond its slots: the heads' own overshoot (< 1 each).
        Heads as of the last tick (counting them walks the process table: once a second, not
        per ack or per record)."""
        return self._heads_seen

    def _overfull(self, dep_id: str) -> bool:
        """Whether the monitor saw more waiting in dispatch than the heads' overshoot."""
        return self._backlog is not None and self._backlog(dep_id) > self._slack()

    def _saturated(self, dep: _Deployment, limit: int) -> bool:
        """Held while requests wait in HOLD and no slot is free (a backlog the feeder is still
        moving into free slots is not saturation), or while dispatch itself has more waiting
        than the heads' overshoot explains (see the module docstring)."""
        if dep.pending < limit and not (dep.stalled and len(dep.queue)):
            return False  # (a stalled move keeps it held: heads must not pass the queue)
        return len(dep.queue) > 0 or dep.pending > limit + self._slack()

    def _move(self, dep: _Deployment, item: Held) -> None:
        """Store ``item`` in dispatch (same ``Nats-Msg-Id``); :meth:`_moved` hears how it went."""
        if self._mover is None:
            raise BusError("the feeder is not started")
        dep.moving += 1
        self._mover.move(
            subjects.dispatch(dep.id),
            item.data,
            item.headers,
            lambda error, duplicate: self._moved(dep, item, error, duplicate),
        )

    def _moved(
        self, dep: _Deployment, item: Held, error: BusError | None, duplicate: bool = False
    ) -> None:
        """Stored: it leaves HOLD with the next purge. Not stored: first in line again.
        ``duplicate``: dispatch had it already (a move before a restart): not counted again."""
        dep.moving -= 1
        if error is None:
            if not duplicate:
                key = (dep.id, item.priority)
                self._moves[key] = self._moves.get(key, 0) + 1
            self._delete(item)
            return
        if isinstance(error, StreamRejected):
            log.warning("dispatch refused a held request of %s: %s", dep.id, error.description)
        else:
            log.warning("could not move a held request of %s: %s", dep.id, error)
        dep.pending = max(0, dep.pending - 1)
        dep.queue.push_front(item.priority, item.tenant, item.weight, item)
        if not dep.stalled and self._current(dep):
            dep.stalled = True
            dep.retry = asyncio.get_running_loop().call_later(0.5, self._retry, dep)

    def _retry(self, dep: _Deployment) -> None:
        dep.stalled, dep.retry = False, None
        self._kick(dep)

    def _delete(self, item: Held) -> None:
        """``item`` is moved (or its caller gave up): it leaves HOLD with the next purge."""
        self._purger.finish(item.subject, item.deployment, item.seq)

    def _expire(self, item: Held, since: float | None = None) -> None:
        """``item``'s deadline passed while it was held: it leaves HOLD, then its caller gets
        its 504 (else a bus caller heard nothing at all), once (:mod:`.heldexpiry`). ``since``:
        when its delete was first tried, if this is a retry."""
        with contextlib.suppress(SupervisorClosed):  # stopping: still in HOLD, for the next run
            self._work.spawn(self._expire_one(item, since), name="feeder-expired")

    async def _expire_one(self, item: Held, since: float | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._expiring:  # (a burst of them: a few deletes at a time)
                # The clock starts once a delete is sent (not while queued for the semaphore);
                # a retry sends one delete, so an unanswered one holds a slot 2 s, not 6.6 s.
                first = loop.time() if since is None else since
                tries = TRIES if since is None else 1
                taken = await expire(self._nc, item, self._ingress, tries)
        except asyncio.CancelledError:  # stopping: in HOLD still unless deleted, and then the
            raise  # next run reads it again (a purge now would drop it unanswered)
        except Exception:  # (a retry of the delete finds it GONE if it was answered)
            log.exception("answering an expired held request failed")
            taken = Taken.UNKNOWN
        if taken is Taken.UNKNOWN:
            # Most often the delete never happened: it stays in HOLD (a purge would drop it
            # unanswered) and the tick tries again; a delete that did go through comes back
            # GONE. Stopped meanwhile: the next run reads it again.
            dep = self._deps.get(item.deployment)
            if dep is None or not self._current(dep):
                return
            behind = self._purger.behind(item.subject, item.seq)
            if loop.time() - first < DELETE_RETRY_S and behind < DELETE_BLOCKS_AT_MOST:
                dep.undeleted.append((item, first))
                return
            log.warning(
                "gave up deleting an expired held request (%s) after %.0f s, %d moved behind"
                " it in HOLD: not answered",
                item.request_id,
                loop.time() - first,
                behind,
            )
        elif taken is Taken.REFUSED:  # an answer, not a silence: trying again will not help
            log.warning("gave up deleting an expired held request (%s)", item.request_id)
        self._delete(item)  # (whatever became of it: else its tenant's purges stop below it)
        if taken is Taken.MINE:
            key = (item.deployment, item.priority)
            self._expired[key] = self._expired.get(key, 0) + 1

    def _forget(self, dep_id: str, purged: tuple[int, ...]) -> None:
        """``purged`` left HOLD: a re-read of them can no longer happen."""
        dep = self._deps.get(dep_id)
        if dep is not None:
            dep.seen.difference_update(purged)

    # ---- slots ----

    async def _activate(self, dep: _Deployment) -> None:
        """Count this deployment's slots from now on: tap its acks, then read its state."""
        if dep.acks is None and self._direct is not None:

            def on_ack(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
                self._on_ack(dep, data)

            dep.acks = await self._direct.subscribe(subjects.dispatch_acks(dep.id), on_ack)
        await self._reconcile(dep)
        dep.active = True

    async def _deactivate(self, dep: _Deployment) -> None:
        dep.active = False
        if dep.acks is not None and self._direct is not None:
            with contextlib.suppress(Exception):
                await self._direct.unsubscribe(dep.acks)
            dep.acks = None

    def _on_ack(self, dep: _Deployment, data: bytes) -> None:
        if data.startswith(_NOT_DONE):
            return
        dep.pending = max(0, dep.pending - 1)
        if len(dep.queue) or dep.held:  # held with HOLD empty: dispatch's backlog may be gone
            self._feed(dep)

    async def _reconcile(self, dep: _Deployment) -> None:
        try:
            info = await self._js.consumer_info(
                subjects.DISPATCH_STREAM, subjects.dispatch_consumer(dep.id)
            )
        except (NatsError, TimeoutError) as exc:  # no consumer yet: nothing in flight
            log.debug("no consumer state for %s: %s", dep.id, exc)
            dep.pending = 0
            return
        dep.pending = (info.num_pending or 0) + (info.num_ack_pending or 0) + dep.moving

    # ---- the saturation record ----

    async def _write(self, dep: _Deployment) -> None:
        now = time.time()
        window = dep.window.seconds(self._latency(dep.id), now)
        state = SchedState(held=dep.held, heads=self._heads_seen, window_s=window, full=dep.full)
        last = dep.written
        if (
            last is not None
            and last.held == state.held
            and last.full == state.full
            and last.heads == state.heads
            and abs(last.window_s - window) <= 0.25 * last.window_s
            and now - last.at < REWRITE_S
        ):  # unchanged: not written again (heads take the feeder's lease as its heartbeat)
            return
        state = msgspec.structs.replace(state, window_s=round(window, 4), at=round(now, 3))
        if self._kv is None:
            return
        try:
            await self._kv.put(f"dep.{dep.id}", SCHED_ENCODER.encode(state))
            dep.written = state
        except (NatsError, TimeoutError) as exc:  # retried on the next tick
            log.warning("could not write the state of %s: %s", dep.id, exc)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except Exception:  # keep feeding: log, retry next second
                log.exception("feeder tick failed")

    async def tick(self) -> None:
        """Once a second: correct slot counts, drop expired requests, refresh records."""
        now = time.time()
        self._heads_seen = max(1, self._heads())
        for dep_id in self._table().deployments():
            self._dep(dep_id)
        for dep in list(self._deps.values()):
            for item in dep.queue.drop(lambda i: i.expired(now)):
                self._expire(item)
            retry, dep.undeleted = dep.undeleted, []
            for item, since in retry:
                self._expire(item, since)
            if not dep.active and self._overfull(dep.id):
                self._kick(dep)  # dispatch filled up on the fast path: count slots (in _pump)
            limit = self.concurrency(dep.id)
            if dep.active:
                await self._reconcile(dep)
                if not len(dep.queue) and dep.pending < limit:
                    await self._deactivate(dep)
            if len(dep.queue) or (dep.active and self._saturated(dep, limit) != dep.held):
                self._kick(dep)
            elif dep.held and not dep.pumping and not dep.active:
                dep.held = False
            if not dep.pumping:  # (a pump recounts it itself) expired requests left above
                dep.full = full_mark(len(dep.queue), dep.full, self._hold_limit)
            await self._write(dep)

    # ---- views ----

    def held(self, dep_id: str, now: float | None = None) -> list[m.HeldQueue]:
        dep = self._deps.get(dep_id)
        return [] if dep is None else heldviews.held_queues(dep.queue, now or time.time())

    def waiting(self, dep_id: str, now: float | None = None) -> tuple[int, float, int]:
        """See :func:`switchyard.control.heldviews.waiting`."""
        dep = self._deps.get(dep_id)
        return (0, 0.0, 0) if dep is None else heldviews.waiting(dep.queue, now or time.time())

    def saturated(self, dep_id: str) -> bool:
        dep = self._deps.get(dep_id)
        return dep is not None and dep.held

    def _export(self, metrics: Metrics) -> None:
        def held_rows() -> list[tuple[tuple[str, ...], float]]:
            rows: dict[tuple[str, ...], float] = {}
            for dep in self._deps.values():
                for priority, _, waiting, first in dep.queue.depths():
                    key = (dep.id, priority, first.label or sc.NO_TEAM)
                    rows[key] = rows.get(key, 0.0) + waiting
            return list(rows.items())

        metrics.gauge_callback(
            sc.QUEUE_HELD,
            "Requests waiting in HOLD for a saturated deployment, by priority and tenant.",
            [sc.DEPLOYMENT, sc.PRIORITY, sc.TENANT],
            held_rows,
        )
        metrics.gauge_callback(
            sc.DEPLOYMENT_SATURATED,
            "1 while a deployment's requests wait in HOLD for fair order.",
            [sc.DEPLOYMENT],
            lambda: [((d.id,), 1.0 if d.held else 0.0) for d in self._deps.values()],
        )

        def rows(counts: dict[tuple[str, str], int]) -> list[tuple[tuple[str, ...], float]]:
            """Every deployment and priority (0 if none), and what counts holds, kept across
            runs: a counter never goes back."""
            out: dict[tuple[str, str], float] = {
                (d, p): 0.0 for d in self._deps for p in PRIORITIES
            }
            out.update((key, float(n)) for key, n in counts.items())
            return list(out.items())

        metrics.counter_callback(
            sc.FAIR_MOVES,
            "Held requests the feeder moved into dispatch, by priority.",
            [sc.DEPLOYMENT, sc.PRIORITY],
            lambda: rows(self._moves),
        )
        metrics.counter_callback(
            sc.HELD_EXPIRED,
            "Held requests whose deadline passed in HOLD, answered 504, by priority.",
            [sc.DEPLOYMENT, sc.PRIORITY],
            lambda: rows(self._expired),
        )
