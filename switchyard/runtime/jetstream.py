"""JetStream publishes with acknowledgement, at a fraction of nats-py's per-call cost.

nats-py's ``js.publish`` makes a request per call (a random token from ``secrets``, a
``wait_for`` task, JSON parsed into a dataclass). Here every ack of a connection arrives on one
wildcard inbox and settles a callback from a dict, and the ack is only checked for an error.

Three ways to publish:

* :meth:`AckPublisher.publish_then` calls back when the ack (or the timeout) comes, with no task
  or future per message (the feeder's moves, many in flight, each acted on when stored);
* :meth:`AckPublisher.publish` waits for that callback (the head's dispatch: the caller must
  know the request is stored before it is told "accepted");
* :meth:`AckPublisher.publish_confirmed` returns at once and confirms in the background,
  re-publishing (deduplicated by ``Nats-Msg-Id``) until stored or given up with a log line
  (usage events: durable, but off the request's path); the future it returns tells whoever
  cares when that happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.nuid import NUID

from switchyard.errors import BusError
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.runtime.jetstream")


class StreamRejected(BusError):
    """JetStream refused the message (e.g. discard-new on a full subject).

    Attributes:
        err_code: JetStream's error code; description: its text.
    """

    def __init__(self, err_code: int, description: str) -> None:
        self.err_code = err_code
        self.description = description
        super().__init__(f"JetStream refused the message: {description} ({err_code})")


class _ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct, frozen=True):
    error: _ApiError | None = None
    duplicate: bool = False


_ACK = msgspec.json.Decoder(_Ack)


_Done = Callable[[BusError | None], None]


@dataclass(slots=True)
class _Pending:
    subject: str
    data: bytes
    headers: dict[str, str]
    sent_at: float
    tries: int
    weight: int = 1
    done: asyncio.Future[bool] | None = None  # True once stored, False if given up

    def settle(self, stored: bool) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(stored)


class AckPublisher:
    """Publish to streams on one connection; :meth:`start` before use, :meth:`stop` after."""

    def __init__(self, nc: NATS, *, confirm_timeout: float = 5.0, max_tries: int = 5) -> None:
        self._nc = nc
        self._nuid = NUID()
        self._inbox = nc.new_inbox()
        self._confirming: dict[str, _Pending] = {}
        self._callbacks: dict[str, tuple[_Done, asyncio.TimerHandle]] = {}
        self._no_callbacks = asyncio.Event()
        self._confirm_timeout = confirm_timeout
        self._max_tries = max_tries
        self._sub: Subscription | None = None
        self._loops = TaskSupervisor("jetstream-confirm")
        self._drained = asyncio.Event()
        self._unconfirmed = asyncio.Event()  # set while _confirming may be non-empty
        # Weight (e.g. usage events) of the messages given up after every retry.
        self.given_up_weight = 0

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._loops.spawn(self._sweep())

    async def stop(self, grace: float = 2.0) -> None:
        """Wait up to ``grace`` for background confirmations, then stop. Idempotent."""
        if self._callbacks:  # acks of publish_then on their way
            self._no_callbacks.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_callbacks.wait(), grace)
        for token in list(self._callbacks):
            self._settle(token, BusError("stopped before the stream acknowledged"))
        if self._confirming:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        if self._confirming:
            log.error(
                "%d published events were not confirmed before shutdown", len(self._confirming)
            )
            self.given_up_weight += sum(p.weight for p in self._confirming.values())
            for pending in self._confirming.values():
                pending.settle(False)
        await self._loops.cancel_all()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        if token in self._callbacks:
            try:
                _check(msg)
            except BusError as exc:
                self._settle(token, exc)
            else:
                self._settle(token, None)
            return
        pending = self._confirming.get(token)
        if pending is None:
            return
        try:
            _check(msg)
        except BusError as exc:
            log.warning("stream refused %s (try %d): %s", pending.subject, pending.tries, exc)
            return  # the sweeper re-publishes it
        del self._confirming[token]
        pending.settle(True)
        if not self._confirming:
            self._drained.set()

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> None:
        """Publish and wait until the stream stored it.

        Raises:
            StreamRejected: the stream refused it (full subject, too large...).
            BusError: no stream answered (no responders), no ack within ``timeout``, or it
                could not be sent (disconnected).
        """
        outcome: asyncio.Future[BusError | None] = asyncio.get_running_loop().create_future()

        def done(error: BusError | None) -> None:
            if not outcome.done():  # the caller may have been cancelled meanwhile
                outcome.set_result(error)

        await self.publish_then(subject, data, headers, timeout, done)
        error = await outcome
        if error is not None:
            raise error

    async def publish_then(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str],
        timeout: float,
        done: Callable[[BusError | None], None],
    ) -> None:
        """Publish; ``done`` is called exactly once: with None once the stream stored it, else
        with the error (:class:`StreamRejected`, no ack within ``timeout``, not sent). Never
        raises; ``done`` may run before this returns."""
        token = self._nuid.next().decode()
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, token, subject)
        self._callbacks[token] = (done, timer)
        self._no_callbacks.clear()
        try:
            await self._nc.publish(subject, data, reply=f"{self._inbox}.{token}", headers=headers)
        except (NatsError, OSError) as exc:  # disconnected, buffer full
            self._settle(token, BusError(f"could not publish to {subject}: {exc}"))

    def _expire(self, token: str, subject: str) -> None:
        self._settle(token, BusError(f"no acknowledgement from the stream for {subject}"))

    def _settle(self, token: str, error: BusError | None) -> None:
        entry = self._callbacks.pop(token, None)
        if entry is None:
            return
        done, timer = entry
        timer.cancel()
        if not self._callbacks:
            self._no_callbacks.set()
        try:
            done(error)
        except Exception:  # a caller's bug must not stop other acks
            log.exception("an acknowledgement callback failed")

    async def publish_confirmed(
        self, subject: str, data: bytes, headers: dict[str, str], *, weight: int = 1
    ) -> asyncio.Future[bool]:
        """Publish without waiting; the background sweeper re-publishes until acknowledged.

        Never raises: once recorded, the message is the sweeper's to deliver (under the same
        headers, so a ``Nats-Msg-Id`` keeps deduplicating). A caller that also re-sent it on an
        error here would store it twice.

        Returns:
            a future: True once the stream stored the message, False if it was given up.
        """
        token = self._nuid.next().decode()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._confirming[token] = _Pending(subject, data, headers, loop.time(), 1, weight, done)
        self._unconfirmed.set()
        try:
            await self._nc.publish(subject, data, reply=f"{self._inbox}.{token}", headers=headers)
        except (NatsError, OSError) as exc:  # disconnected, buffer full: the sweeper retries
            log.warning("publishing to %s failed (%s); will retry", subject, type(exc).__name__)
        return done

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._confirming:  # nothing to confirm: sleep without a timer
                self._unconfirmed.clear()
                await self._unconfirmed.wait()
            await asyncio.sleep(1.0)
            now = loop.time()
            for token, pending in list(self._confirming.items()):
                if now - pending.sent_at < self._confirm_timeout:
                    continue
                del self._confirming[token]
                if pending.tries >= self._max_tries:
                    log.error(
                        "gave up storing a message on %s after %d tries",
                        pending.subject,
                        pending.tries,
                    )
                    self.given_up_weight += pending.weight
                    pending.settle(False)
                    if not self._confirming:
                        self._drained.set()
                    continue
                retry = self._nuid.next().decode()
                self._confirming[retry] = _Pending(
                    pending.subject,
                    pending.data,
                    pending.headers,
                    now,
                    pending.tries + 1,
                    pending.weight,
                    pending.done,
                )
                with contextlib.suppress(Exception):  # still disconnected: next sweep retries
                    await self._nc.publish(
                        pending.subject,
                        pending.data,
                        reply=f"{self._inbox}.{retry}",
                        headers=pending.headers,
                    )


def _check(msg: Msg) -> None:
    no_responders = (msg.headers or {}).get("Status") == "503"
    error = ack_error(msg.data, no_responders=no_responders)
    if error is not None:
        raise error


def ack_duplicate(data: bytes) -> bool:
    """Whether a stream's answer to a publish says it was stored already (same msg-id)."""
    if b'"duplicate"' not in data:
        return False
    try:
        return _ACK.decode(data).duplicate
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return False


def ack_error(data: bytes, *, no_responders: bool = False) -> BusError | None:
    """What a stream's answer to a publish says went wrong (None: stored). ``no_responders``:
    the answer was the server's 503 status (no stream listens on the subject)."""
    if no_responders:
        return BusError("no stream is available for this subject (JetStream unavailable)")
    if b'"error"' not in data:
        return None
    try:
        ack = _ACK.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return BusError("unreadable acknowledgement from JetStream")
    if ack.error is not None:
        return StreamRejected(ack.error.err_code, ack.error.description)
    return None
