"""The processes of ``bench.store_once_probe``: producer, model-proxies and the feeder.

Each runs in an OS process of its own (``python -m bench.store_once_probe --role ...``) and
answers ``probe.stats.<name>`` with its counters. None of them uses the package's workers:
they copy the shape of the real paths (see the probe's docstring) so the three variants differ
only in how a waiting request reaches a free slot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus.direct import DirectDelivery, header_block

DEP = "probe"
DISPATCH_STREAM, HOLD_STREAM = "DISPATCH", "HOLD"
DISPATCH_SUBJECT = f"llm.v1.dispatch.{DEP}"
FCFS_CONSUMER = f"dep-{DEP}"
PRIORITIES = ("interactive", "default")  # the order a free slot looks at them
CONCURRENCY, PROXIES = 16, 2
SLOT_S = 0.05  # the provider's time per call
BODY = b"x" * 1024
ANSWER = b'{"choices":[{"message":{"content":"ok"}}]}'
_NS = 1_000_000_000
PULL_EXPIRES_S = 30.0
PURGE_BATCH, PURGE_S = 64, 0.5


def _pull_request(batch: int, heartbeat: float) -> dict[str, int]:
    """A pull request's body; ``heartbeat`` 0: no idle heartbeat."""
    request = {"batch": batch, "expires": int(PULL_EXPIRES_S * _NS)}
    if heartbeat > 0:
        request["idle_heartbeat"] = int(heartbeat * _NS)
    return request


def hold_subject(priority: str, tenant: str) -> str:
    return f"llm.v1.hold.{DEP}.{priority}.{tenant}"


def hold_consumer(priority: str, tenant: str) -> str:
    return f"hold-{DEP}-{priority}-{tenant}"


def tenant_names(count: int) -> list[str]:
    return [f"t{i:02d}" for i in range(count)]


def outstanding_of(count: int, total: int) -> dict[str, int]:
    """Closed-loop requests per tenant: harmonic shares of ``total`` (at least 1 each), so
    first come, first served gives unequal shares and fair order gives equal ones."""
    names = tenant_names(count)
    harmonic = sum(1.0 / (i + 1) for i in range(count))
    return {n: max(1, round(total / harmonic / (i + 1))) for i, n in enumerate(names)}


@dataclass
class Drr:
    """Strict priority, then deficit round robin (cost 1 per request) over queues that
    ``ready(i)`` says have a request in hand; ``backlogged(i)``: not in hand but more is
    coming (its deficit is kept)."""

    by_priority: dict[str, list[int]]
    weight: list[float]
    ready: Callable[[int], bool]
    backlogged: Callable[[int], bool]
    deficit: list[float] = field(default_factory=list)
    cursor: dict[str, int] = field(default_factory=dict)
    fresh: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deficit = [0.0] * len(self.weight)

    def pick(self) -> int | None:
        for priority, order in self.by_priority.items():
            if not any(self.ready(i) for i in order):
                continue
            n = len(order)
            for _ in range(3 * n + 3):
                cur = self.cursor.get(priority, 0) % n
                i = order[cur]
                if not self.ready(i):
                    if not self.backlogged(i):
                        self.deficit[i] = 0.0
                    self.cursor[priority], self.fresh[priority] = cur + 1, True
                    continue
                if self.fresh.get(priority, True):
                    self.deficit[i] = min(self.deficit[i] + self.weight[i], 2 * self.weight[i])
                    self.fresh[priority] = False
                if self.deficit[i] >= 1.0:
                    self.deficit[i] -= 1.0
                    return i
                self.cursor[priority], self.fresh[priority] = cur + 1, True
        return None


class Role:
    """Connection, stats subject, and a stop on SIGTERM."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.heartbeat = 5.0  # the idle heartbeat of a model-proxy's pull requests (0: none)
        self.nc: NATS = NATS()
        self.starts: collections.Counter[str] = collections.Counter()
        self.stop = asyncio.Event()

    async def open(self) -> None:
        self.nc = await nats.connect(self.url, name=self.name, max_reconnect_attempts=3)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        await self.nc.subscribe(f"probe.stats.{self.name}", cb=self._on_stats)

    async def _on_stats(self, msg: Msg) -> None:
        await msg.respond(json.dumps(self.stats()).encode())

    def stats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "starts": dict(self.starts)}

    async def serve(self, msg: Msg) -> None:
        """The provider: 50 ms, then the answer to the caller, then the ack (the slot)."""
        headers = msg.headers or {}
        self.starts[headers.get("Sy-Tenant", "?")] += 1
        started = time.time()
        await asyncio.sleep(SLOT_S)
        reply = headers.get("Sy-Reply")
        if reply:
            await self.nc.publish(
                reply, ANSWER, headers={"Sy-Kind": "final", "Sy-Started": f"{started:.6f}"}
            )
        await msg.ack()


class Producer(Role):
    """Like heads: each closed-loop worker stores a request (JetStream publish, waits for the
    store ack), then waits for its answer on the producer's inbox, and sends the next.
    Once a second an interactive request is sent too, and the time until it started taken."""

    def __init__(self, url: str, name: str, variant: int, tenants: int, total: int) -> None:
        super().__init__(url, name)
        self.variant = variant
        self.mix = outstanding_of(tenants, total)
        self.completed = 0
        self.refused = 0
        self.interactive: list[float] = []
        self._futures: dict[str, asyncio.Future[bytes]] = {}
        self._count = 0
        self._ack_inbox = ""
        self._reply_inbox = ""

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "completed": self.completed,
            "refused": self.refused,
            "interactive_s": self.interactive,
            "mix": self.mix,
        }

    async def run(self) -> None:
        await self.open()
        self._ack_inbox, self._reply_inbox = self.nc.new_inbox(), self.nc.new_inbox()
        await self.nc.subscribe(f"{self._ack_inbox}.*", cb=self._on_message)
        await self.nc.subscribe(f"{self._reply_inbox}.*", cb=self._on_message)
        workers = [
            asyncio.create_task(self._worker(tenant))
            for tenant, n in self.mix.items()
            for _ in range(n)
        ]
        workers.append(asyncio.create_task(self._probe_interactive(next(iter(self.mix)))))
        await self.stop.wait()
        for task in workers:
            task.cancel()

    async def _on_message(self, msg: Msg) -> None:
        future = self._futures.pop(msg.subject, None)
        if future is not None and not future.done():
            started = (msg.headers or {}).get("Sy-Started", "")
            future.set_result(started.encode() if started else msg.data)

    def _subject(self, priority: str, tenant: str) -> str:
        if self.variant in (1, 4):
            return DISPATCH_SUBJECT
        return hold_subject(priority, tenant)

    async def _one(self, priority: str, tenant: str) -> float:
        """One request; returns when its answer came, with the time it started."""
        loop = asyncio.get_running_loop()
        self._count += 1
        token = str(self._count)
        reply = f"{self._reply_inbox}.{token}"
        answered: asyncio.Future[bytes] = loop.create_future()
        self._futures[reply] = answered
        headers = {
            "Nats-Msg-Id": f"{self.name}-{token}",
            "Sy-Reply": reply,
            "Sy-Tenant": tenant,
            "Sy-Priority": priority,
        }
        while True:
            ack = f"{self._ack_inbox}.{token}"
            stored: asyncio.Future[bytes] = loop.create_future()
            self._futures[ack] = stored
            await self.nc.publish(self._subject(priority, tenant), BODY, ack, headers)
            result = await asyncio.wait_for(stored, 10)
            if b'"error"' not in result:
                break
            self.refused += 1
            await asyncio.sleep(0.1)
        started = await asyncio.wait_for(answered, 60)
        return float(started)

    async def _worker(self, tenant: str) -> None:
        while True:
            try:
                await self._one("default", tenant)
            except TimeoutError:
                continue
            self.completed += 1

    async def _probe_interactive(self, tenant: str) -> None:
        while True:
            await asyncio.sleep(1.0)
            sent = time.time()
            with contextlib.suppress(TimeoutError):
                started = await self._one("interactive", tenant)
                self.interactive.append(round(started - sent, 4))
                self.completed += 1


class CreditProxy(Role):
    """A model-proxy pulling the deployment's one consumer with credits (runtime/puller.py):
    pull requests for its free slots, topped up once a quarter of them is free."""

    def __init__(self, url: str, name: str, capacity: int, *, single: bool = False) -> None:
        super().__init__(url, name)
        self.capacity = capacity
        # single: a pull request of batch 1 per freed slot (store-once's pattern, one consumer)
        self._threshold = 1 if single else max(1, capacity // 4)
        self._outstanding = self._inflight = 0
        self._inbox = ""
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{DISPATCH_STREAM}.{FCFS_CONSUMER}"
        self._tasks: set[asyncio.Task[None]] = set()
        self.pulls = 0

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "pulls": self.pulls}

    async def run(self) -> None:
        await self.open()
        self._inbox = self.nc.new_inbox()
        await self.nc.subscribe(self._inbox, cb=self._on_message)
        await self._top_up()
        await self.stop.wait()

    async def _top_up(self) -> None:
        free = self.capacity - self._inflight - self._outstanding
        if free <= 0 or (self._outstanding > 0 and free < self._threshold):
            return
        request = _pull_request(free, self.heartbeat)
        self._outstanding += free
        self.pulls += 1
        await self.nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._outstanding = max(0, self._outstanding - 1)
            self._inflight += 1
            task = asyncio.create_task(self._run(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if status == "100":
            return
        pending = msg.headers.get("Nats-Pending-Messages") if msg.headers else None
        if status == "408" and pending is not None and pending.isdecimal():
            self._outstanding = max(0, self._outstanding - int(pending))
        else:
            self._outstanding = 0
        await self._top_up()

    async def _run(self, msg: Msg) -> None:
        try:
            await self.serve(msg)
        finally:
            self._inflight -= 1
            await self._top_up()


class StoreOnceProxy(Role):
    """Store-once: one durable pull consumer per HOLD subject (priority, tenant); a pull
    request of batch 1 outstanding on each, so at most one request per consumer in hand; a
    freed slot starts the next one in hand by priority, then DRR, and pulls 1 more for it."""

    def __init__(
        self, url: str, name: str, capacity: int, tenants: int, *, prefetch: int = 1
    ) -> None:
        super().__init__(url, name)
        self.capacity = capacity
        self.prefetch = prefetch  # requests of one consumer in hand or asked for, at most
        self.keys = [(p, t) for p in PRIORITIES for t in tenant_names(tenants)]
        self._index = {hold_subject(p, t): i for i, (p, t) in enumerate(self.keys)}
        self._in_hand: list[collections.deque[Msg]] = [collections.deque() for _ in self.keys]
        self._pulling = [0] * len(self.keys)  # requests asked for, not yet come
        self._backlog = [0] * len(self.keys)
        by_priority = {p: [i for i, k in enumerate(self.keys) if k[0] == p] for p in PRIORITIES}
        self._drr = Drr(
            by_priority,
            [1.0] * len(self.keys),
            ready=lambda i: bool(self._in_hand[i]),
            backlogged=lambda i: self._pulling[i] > 0 and self._backlog[i] > 0,
        )
        self._inflight = 0
        self._inbox = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self.pulls = 0
        self.expired = 0

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "pulls": self.pulls, "expired_pulls": self.expired}

    async def run(self) -> None:
        await self.open()
        self._inbox = self.nc.new_inbox()
        await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        for i in range(len(self.keys)):
            await self._pull(i)
        await self.stop.wait()

    async def _pull(self, i: int) -> None:
        """Ask for this consumer's next requests, once none is in hand or asked for."""
        if self._pulling[i] or self._in_hand[i]:
            return
        priority, tenant = self.keys[i]
        request = _pull_request(self.prefetch, self.heartbeat)
        self._pulling[i] = self.prefetch
        self.pulls += 1
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{HOLD_STREAM}.{hold_consumer(priority, tenant)}"
        await self.nc.publish(subject, json.dumps(request).encode(), reply=f"{self._inbox}.{i}")

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:  # a request: delivered on its own subject
            i = self._index[msg.subject]
            self._pulling[i] = max(0, self._pulling[i] - 1)
            self._in_hand[i].append(msg)
            self._backlog[i] = msg.metadata.num_pending or 0
            await self._start()
            return
        i = int(msg.subject.rsplit(".", 1)[1])  # a status: on the pull request's inbox
        if status == "100" or not self._pulling[i]:
            return
        self.expired += status == "408"
        self._pulling[i] = 0  # what it did not deliver is not coming
        if status != "408":
            await asyncio.sleep(0.5)
        await self._pull(i)

    async def _start(self) -> None:
        while self._inflight < self.capacity:
            i = self._drr.pick()
            if i is None:
                return
            msg = self._in_hand[i].popleft()
            self._inflight += 1
            task = asyncio.create_task(self._run(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await self._pull(i)

    async def _run(self, msg: Msg) -> None:
        try:
            await self.serve(msg)
        finally:
            self._inflight -= 1
            await self._start()


@dataclass
class _Held:
    subject: str
    seq: int
    data: bytes
    headers: bytes


class Feeder(Role):
    """Today's fair pattern, roughly (control/feeder.py): an ordered consumer reads HOLD; each
    freed slot (a tapped ``$JS.ACK`` of the dispatch consumer) moves the next request by
    priority then DRR into dispatch, waiting for its store ack; moved requests leave HOLD in a
    purge per tenant subject (64 at a time, else after 0.5 s). Taps and moves go through
    ``switchyard.bus.direct`` as the feeder's do; once a second the consumer state corrects the
    slot count."""

    def __init__(self, url: str, name: str, tenants: int) -> None:
        super().__init__(url, name)
        self.keys = [(p, t) for p in PRIORITIES for t in tenant_names(tenants)]
        self._index = {hold_subject(p, t): i for i, (p, t) in enumerate(self.keys)}
        self._queues: list[collections.deque[_Held]] = [collections.deque() for _ in self.keys]
        by_priority = {p: [i for i, k in enumerate(self.keys) if k[0] == p] for p in PRIORITIES}
        self._drr = Drr(
            by_priority,
            [1.0] * len(self.keys),
            ready=lambda i: bool(self._queues[i]),
            backlogged=lambda i: False,
        )
        self._pending = 0
        self._moving: dict[bytes, _Held] = {}
        self._count = 0
        self._inbox = ""
        self._unfinished: dict[str, collections.deque[int]] = collections.defaultdict(
            collections.deque
        )
        self._finished: dict[str, set[int]] = collections.defaultdict(set)
        self._due: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._direct: DirectDelivery | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.moves = self.purges = self.taps = 0

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "moves": self.moves,
            "purges": self.purges,
            "taps": self.taps,
            "direct": self._direct is not None and self._direct.direct,
        }

    async def run(self) -> None:
        await self.open()
        self._direct = await DirectDelivery.attach(self.nc)
        self._inbox = self.nc.new_inbox()
        await self._direct.subscribe(f"{self._inbox}.*", self._on_stored)
        await self._direct.subscribe(f"$JS.ACK.{DISPATCH_STREAM}.{FCFS_CONSUMER}.>", self._on_tap)
        js = self.nc.jetstream()
        await js.subscribe(
            f"llm.v1.hold.{DEP}.>",
            stream=HOLD_STREAM,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            cb=self._on_held,
        )
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)
            info = await js.consumer_info(DISPATCH_STREAM, FCFS_CONSUMER)
            self._pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
            self._pending += len(self._moving)
            self._fill()

    async def _on_held(self, msg: Msg) -> None:
        i = self._index.get(msg.subject)
        if i is None:
            return
        fields = dict(msg.headers or {})
        seq = msg.metadata.sequence.stream
        self._queues[i].append(_Held(msg.subject, seq, msg.data, header_block(fields)))
        self._unfinished[msg.subject].append(seq)
        self._fill()

    def _fill(self) -> None:
        assert self._direct is not None
        while self._pending < CONCURRENCY:
            i = self._drr.pick()
            if i is None:
                return
            item = self._queues[i].popleft()
            self._pending += 1
            self._count += 1
            token = str(self._count)
            self._moving[token.encode()] = item
            self.moves += 1
            self._direct.publish(
                DISPATCH_SUBJECT, item.data, f"{self._inbox}.{token}", item.headers
            )

    def _on_tap(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if data.startswith((b"-NAK", b"+WPI")):
            return
        self.taps += 1
        self._pending = max(0, self._pending - 1)
        self._fill()

    def _on_stored(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        item = self._moving.pop(subject[len(self._inbox) + 1 :], None)
        if item is None:
            return
        if b'"error"' in data:  # first in line again
            self._pending = max(0, self._pending - 1)
            self._queues[self._index[item.subject]].appendleft(item)
            return
        self._finish(item)

    def _finish(self, item: _Held) -> None:
        done, waiting = self._finished[item.subject], self._unfinished[item.subject]
        done.add(item.seq)
        self._last[item.subject] = max(self._last.get(item.subject, 0), item.seq)
        while waiting and waiting[0] in done:
            done.discard(waiting.popleft())
        self._due[item.subject] = self._due.get(item.subject, 0) + 1
        if self._due[item.subject] >= PURGE_BATCH:
            self._purge_soon()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(PURGE_S, self._purge_soon)

    def _purge_soon(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for subject in [s for s, n in self._due.items() if n]:
            waiting = self._unfinished[subject]
            # Below the oldest still waiting or moving; else past the last moved (never
            # what was stored since and not read yet).
            below = waiting[0] if waiting else self._last[subject] + 1
            self._due[subject] = 0
            task = asyncio.create_task(self._purge(subject, below))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _purge(self, subject: str, below: int) -> None:
        body = {"filter": subject, "seq": below}  # removes what is below ``below``
        self.purges += 1
        with contextlib.suppress(Exception):
            await self.nc.request(
                f"$JS.API.STREAM.PURGE.{HOLD_STREAM}", json.dumps(body).encode(), timeout=5
            )


async def run_role(
    role: str, url: str, *, name: str, variant: int, tenants: int, total: int, heartbeat: float
) -> None:
    share = CONCURRENCY // PROXIES
    runner: Producer | CreditProxy | StoreOnceProxy | Feeder
    if role == "producer":
        runner = Producer(url, name, variant, tenants, total)
    elif role == "proxy":
        if variant in (2, 5):
            runner = StoreOnceProxy(url, name, share, tenants, prefetch=1 if variant == 2 else 2)
        else:
            runner = CreditProxy(url, name, share, single=variant == 4)
    elif role == "feeder":
        runner = Feeder(url, name, tenants)
    else:
        raise ValueError(f"unknown role {role}")
    runner.heartbeat = heartbeat
    await runner.run()
    with contextlib.suppress(Exception):
        await runner.nc.close()
