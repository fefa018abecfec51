"""Pull one deployment's requests with credits: one subscription, a few batched pull requests.

The process keeps pull requests outstanding for as many messages as it has free slots
(``capacity``), and tops them up as requests finish, so an idle deployment costs one pull
request per ``expires`` instead of one per worker per poll, and a busy one amortises each pull
request over many messages. JetStream spreads messages round-robin over the waiting pull
requests of all processes, and the consumer's ``max_ack_pending`` caps the deployment across
all of them.

Status messages keep the credit count honest: a 408 returns the unfulfilled credits, a 409
(leader change, too many waiting requests) or a silence longer than three heartbeats means the
pull requests are gone, so they are issued again. So does the consumer's ``LEADER_ELECTED``
advisory: pull requests live on the consumer's leader and die with its node without a word, and
the advisory says so at once where the watchdog would take three heartbeats. On stop the
subscription goes first; the server skips pull requests without a subscriber, so no message is
stranded.

:meth:`Puller.pause` stops taking messages without stopping: the subscription is drained (the
server is told first, then what it sent before hearing so is handled as usual), which leaves the
pull requests out without a subscriber, so JetStream gives their messages to the other
processes. A message the server was handing to the inbox at the very moment it heard may still
arrive once the subscription is gone; like one in flight on stop, it comes again after the
consumer's ``ack_wait``. :meth:`Puller.resume` subscribes a fresh inbox and pulls again, at first
as few messages as its caller asks. Requests in hand carry on through both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchyard.bus import subjects
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.puller")

Handle = Callable[[Msg, str], Awaitable[None]]
_ENCODE = msgspec.json.Encoder()
_NS = 1_000_000_000
_RETIRE_WAIT_S = 2.0  # on stop, for the inboxes a pause is draining
_STATUS = {"503": "no responders: the consumer has no leader for now, as in a failover"}


class Puller:
    def __init__(
        self,
        nc: NATS,
        deployment_id: str,
        capacity: int,
        handle: Handle,
        *,
        expires: float = 60.0,
        heartbeat: float = 10.0,
        stream: str = subjects.DISPATCH_STREAM,
        consumer: str | None = None,
    ) -> None:
        if not 0 < 2 * heartbeat <= expires:
            # JetStream refuses such pull requests ("heartbeat value too large"): the puller
            # would re-issue them forever and never be served.
            raise ValueError(
                f"a puller's heartbeat ({heartbeat} s) must be positive and at most half its"
                f" expires ({expires} s)"
            )
        self.nc = nc
        self.deployment_id = deployment_id
        self.capacity = capacity
        self._handle = handle
        durable = consumer or subjects.dispatch_consumer(deployment_id)
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._leader_elected = subjects.leader_elected(stream, durable)
        self._expires = expires
        self._heartbeat = heartbeat
        # Top up only once a quarter of the slots are free: fewer, larger pull requests.
        self._threshold = max(1, capacity // 4)
        self._outstanding = 0
        self._inflight = 0
        self._work = TaskSupervisor(f"pull-{deployment_id}")
        self._loops = TaskSupervisor(f"pull-watch-{deployment_id}")
        self._retiring = TaskSupervisor(f"pull-pause-{deployment_id}")  # draining inboxes
        self._sub: Subscription | None = None
        self._leaders: Subscription | None = None
        self._inbox = ""
        self._last_heard = 0.0
        self._stopping = False
        self._paused = False
        # While set, at most this many messages in hand or asked for (after a resume).
        self._first: int | None = None
        self._retry: asyncio.TimerHandle | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    async def start(self) -> None:
        await self._open()
        self._leaders = await self.nc.subscribe(self._leader_elected, cb=self._on_leader_elected)
        self._loops.spawn(self._watch())
        await self._top_up()

    async def _open(self) -> None:
        """Subscribe a fresh inbox for the pull requests from now on."""
        inbox = self.nc.new_inbox()

        async def on_message(msg: Msg) -> None:
            await self._on_message(msg, inbox)

        sub = await self.nc.subscribe(inbox, cb=on_message)
        if self._stopping:  # stopped meanwhile
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        elif self._paused:  # paused meanwhile
            self._retiring.spawn(self._retire(sub))
        else:
            self._inbox, self._sub = inbox, sub
            self._last_heard = asyncio.get_running_loop().time()

    async def _top_up(self) -> None:
        if self._stopping or self._paused or self._sub is None or not self.nc.is_connected:
            return
        capacity = self.capacity if self._first is None else min(self.capacity, self._first)
        free = capacity - self._inflight - self._outstanding
        if free <= 0 or (self._outstanding > 0 and free < self._threshold):
            return
        request = {
            "batch": free,
            "expires": int(self._expires * _NS),
            "idle_heartbeat": int(self._heartbeat * _NS),
        }
        self._outstanding += free
        try:
            await self.nc.publish(self._next, _ENCODE.encode(request), reply=self._inbox)
        except Exception:  # disconnected: the watchdog or the reconnect hook re-issues it
            self._outstanding = max(0, self._outstanding - free)  # a pause may have zeroed it
            log.warning("could not issue a pull request for %s", self.deployment_id, exc_info=True)

    async def _on_message(self, msg: Msg, inbox: str) -> None:
        # Another inbox's: one drained by a pause, whose pull requests are given up.
        current = self._sub is not None and inbox == self._inbox
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if current:
                self._last_heard = asyncio.get_running_loop().time()
                self._outstanding = max(0, self._outstanding - 1)
            if self._work.closed:  # stopping: redelivered after ack_wait, as on stop
                return
            self._inflight += 1
            self._work.spawn(self._run(msg))
            return
        if not current:  # the status of a pull request given up: its credits are gone already
            return
        self._last_heard = asyncio.get_running_loop().time()
        if status == "100":  # idle heartbeat: the pull requests are alive
            return
        pending = msg.headers.get("Nats-Pending-Messages") if msg.headers else None
        if status == "408" and pending is not None and pending.isdecimal():
            self._outstanding = max(0, self._outstanding - int(pending))
            await self._top_up()
            return
        # 409 (leader change, too many waiting pulls, consumer deleted...) or an unknown status:
        # forget the credits and ask again shortly.
        description = msg.headers.get("Description", "") if msg.headers else ""
        # A bare status (a 503) has no description: nats-py leaves the next header lines there.
        said = description.splitlines()[0].strip() if description else ""
        said = said or _STATUS.get(status, "no description")
        log.info("pull status %s (%s) for %s; re-issuing", status, said, self.deployment_id)
        self._outstanding = 0
        self._schedule_retry(0.5)

    async def _on_leader_elected(self, _msg: Msg) -> None:
        log.info("new leader for the queue of %s; re-issuing pull requests", self.deployment_id)
        self.reset()

    def _schedule_retry(self, delay: float) -> None:
        if self._retry is None and not self._stopping:
            loop = asyncio.get_running_loop()

            def fire() -> None:
                self._retry = None
                if not self._stopping:
                    self._loops.spawn(self._top_up())

            self._retry = loop.call_later(delay, fire)

    async def _run(self, msg: Msg) -> None:
        try:
            await self._handle(msg, self.deployment_id)
        finally:
            self._inflight -= 1
            if not self._paused:  # handled without a pause: the full capacity again
                self._first = None
            await self._top_up()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await asyncio.sleep(self._heartbeat)
            silent = loop.time() - self._last_heard
            if self._outstanding and silent > 3 * self._heartbeat:
                log.info(
                    "no word from the pull requests of %s for %.0fs; re-issuing",
                    self.deployment_id,
                    silent,
                )
                self._outstanding = 0
            await self._top_up()

    async def resize(self, capacity: int) -> None:
        """Serve with ``capacity`` slots from now on; requests in hand carry on undisturbed.

        A larger capacity is pulled at once. A smaller one holds as outstanding pull requests are
        used up or expire; meanwhile the consumer's ``max_ack_pending`` (updated by the control
        service before it publishes the route change) still caps the deployment.
        """
        self.capacity = capacity
        self._threshold = max(1, capacity // 4)
        await self._top_up()

    def reset(self) -> None:
        """After a reconnect or a new consumer leader: the pull requests out are gone."""
        self._outstanding = 0
        self._schedule_retry(0.05)

    def pause(self) -> None:
        """Take no more messages until :meth:`resume`; requests in hand carry on. Idempotent.

        The inbox is drained in the background: the server hears first that nobody listens
        there any more, so it skips the pull requests out (their messages go to the other
        processes, or wait in the queue), and the messages it sent before are handled as usual
        (see the module's docstring for one sent at that very moment).
        """
        if self._paused or self._stopping:
            return
        self._paused = True
        self._first = None
        self._outstanding = 0
        sub, self._sub, self._inbox = self._sub, None, ""
        if sub is not None:
            self._retiring.spawn(self._retire(sub))

    async def resume(self, first: int | None = None) -> None:
        """Pull again after :meth:`pause`, through a fresh inbox: at most ``first`` messages
        at a time (in hand or asked for) until one of them is handled without a new pause,
        then ``capacity``. Idempotent."""
        if not self._paused or self._stopping:
            return
        self._paused = False
        self._first = first
        await self._open()
        await self._top_up()

    async def _retire(self, sub: Subscription) -> None:
        try:
            await sub.drain()  # type: ignore[no-untyped-call]
        except Exception:  # disconnected or closing: the pull requests die with the connection
            log.info("could not drain a paused inbox of %s", self.deployment_id, exc_info=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stop(self, grace: float) -> None:
        """Stop pulling, finish requests in hand within ``grace``. Idempotent."""
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sub in (self._sub, self._leaders):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._sub = self._leaders = None
        # Inboxes a pause is draining: what they still deliver is handled (one round trip).
        await self._retiring.drain(min(grace, _RETIRE_WAIT_S))
        await self._loops.cancel_all()
        await self._work.drain(grace)
