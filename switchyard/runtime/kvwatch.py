"""Follow a NATS KV bucket live: the initial values, then every change, in one task.

Heads and model-proxies keep the route table this way, ingresses keep client keys, and every
replica applies a change within milliseconds of the write (no polling, no restart).

A watch is an ordered push consumer, which nats-py re-creates when it notices a gap or two
missed heartbeats. It does not always notice, and does not always succeed: after a NATS node
loss a CI run saw an edge miss a newly written key for over a minute (nats-py 2.16 tries the
re-creation once and only reports a failure; a message lost as the first after a re-creation
is never noticed, since the heartbeat's sequence check needs an earlier message). So the
follower checks its own watch: every ``check_s`` it asks the server about the watch's consumer
(one small JetStream API call), and watches again from its last revision when the consumer is
gone twice in a row, or when the server has delivered (or holds) entries newer than the
follower applied and the follower made no progress since the check before. A reader that got
a revision from the bucket directly says so (:meth:`KvFollower.behind`): a watch that has not
delivered it a second later is opened again at once, not after two checks. Each check that
finds the watch on the server and keeping up is noted (:attr:`KvFollower.confirmed_at`), so a
reader that must not act on a stale view can tell how long ago its watch was last known good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.bus.flow_control import quiet_flow_control
from switchyard.runtime.kvlatest import entries_on_the_way
from switchyard.runtime.tasks import SupervisorClosed, TaskSupervisor

log = logging.getLogger("switchyard.kv")

# (key, value or None when deleted, revision)
OnEntry = Callable[[str, bytes | None, int], Awaitable[None] | None]

CHECK_S = 10.0  # how often a follower checks its watch (two checks to act: 10-20 s)
_ASK_TIMEOUT_S = 3.0
_DRAIN_S = 2.0  # for a stopped watch's queued entries to be applied
BEHIND_GRACE_S = 1.0  # how long a revision read directly may take to arrive by the watch


class KvFollower:
    """Delivers every entry of ``bucket`` matching ``keys`` to ``on_entry``.

    :meth:`start` returns once the current contents were delivered, so a caller is ready to
    serve with a complete view. A handler that raises is logged and the entry skipped: a bad
    document never stops the follower. Entries arrive in revision order, each once: a watch
    opened again after a stall skips what was already applied.
    """

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        on_entry: OnEntry,
        keys: str = ">",
        *,
        check_s: float = CHECK_S,
    ) -> None:
        self._js = js
        self._bucket = bucket
        self._keys = keys
        self._on_entry = on_entry
        self._check_s = check_s
        self._loops = TaskSupervisor(f"kv-follow-{bucket}")
        self._kv: KeyValue | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._following: asyncio.Task[None] | None = None
        self.revision = 0
        self.rewatches = 0  # how many times the watch was opened again (for tests and logs)
        self._reopening = asyncio.Lock()  # the guard and a reader's report both reopen
        self._expecting: asyncio.Task[None] | None = None
        self._expected = 0  # the highest revision a reader reported (:meth:`behind`)
        # When (time.monotonic) the watch was last known good: started, or found on the
        # server and keeping up by a check.
        self.confirmed_at = 0.0

    async def start(self, timeout: float = 10.0) -> None:
        self._kv = await self._js.key_value(self._bucket)
        ready = asyncio.get_running_loop().create_future()
        await self._open(ready)
        await asyncio.wait_for(ready, timeout)
        self.confirmed_at = time.monotonic()
        self._loops.spawn(self._guard(), name=f"kv-guard-{self._bucket}")

    async def _open(self, ready: asyncio.Future[None] | None) -> None:
        """Watch the bucket; a watch opened again skips what is applied already."""
        assert self._kv is not None  # noqa: S101  (set by start)
        watcher = await self._kv.watch(self._keys)
        quiet_flow_control(watcher._sub)  # no poll four times a second while idle
        self._watcher = watcher
        self._following = self._loops.spawn(self._follow(watcher, ready, self.revision))

    async def _follow(
        self, watcher: KeyValue.KeyWatcher, ready: asyncio.Future[None] | None, applied: int
    ) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial contents (or entries still on their way)
                if ready is not None and not ready.done() and not await entries_on_the_way(watcher):
                    ready.set_result(None)
                continue
            if entry.revision <= applied:  # a watch opened again: applied already
                continue
            deleted = entry.operation in ("DEL", "PURGE")
            try:
                result = self._on_entry(entry.key, None if deleted else entry.value, entry.revision)
                if result is not None:
                    await result
            except Exception:  # a bad entry must not stop the follower; it is logged
                log.exception(
                    "ignored KV entry %s/%s (revision %s)", self._bucket, entry.key, entry.revision
                )
            self.revision = max(self.revision, entry.revision)
            if ready is not None and not ready.done() and entry.delta == 0:
                ready.set_result(None)

    async def _guard(self) -> None:
        """Check the watch every ``check_s``; open it again when it stopped delivering."""
        missing = 0  # checks in a row that found no consumer
        behind_at: int | None = None  # our revision at the last check that found us behind
        reopened_for: tuple[int, ...] = ()  # (ours, *server's) when last opened again
        while True:
            await asyncio.sleep(self._check_s)
            if not getattr(getattr(self._js, "_nc", None), "is_connected", True):
                missing, behind_at = 0, None  # reconnecting: nats-py resumes the watch first
                continue
            seen = await self._server_view()
            why = None
            if seen is None:
                missing += 1
                if missing >= 2:
                    why = "has no consumer on the server"
            elif seen[0] > self.revision or seen[1] > 0:
                missing = 0
                stuck = behind_at == self.revision
                behind_at = self.revision
                if not stuck:  # entries on their way, and it applied some since
                    self.confirmed_at = time.monotonic()
                if stuck and reopened_for != (self.revision, *seen):
                    why = (
                        f"stopped at revision {self.revision} (the server delivered up to"
                        f" {seen[0]} and holds {seen[1]} more)"
                    )
            else:
                missing, behind_at = 0, None
                self.confirmed_at = time.monotonic()
            if why is None:
                continue
            log.warning(
                "KV watch of %s %s; watching again from revision %d",
                self._bucket,
                why,
                self.revision,
            )
            missing, behind_at = 0, None
            reopened_for = (self.revision, *(seen or (0, 0)))
            try:
                await self._reopen()
            except (NatsError, OSError, TimeoutError) as exc:  # tried again at the next check
                log.warning(
                    "could not watch %s again (%s); next try in %.0f s",
                    self._bucket,
                    type(exc).__name__,
                    self._check_s,
                )

    def behind(self, revision: int) -> None:
        """Someone read ``revision`` of the bucket directly: if the watch has not delivered
        it within ``BEHIND_GRACE_S``, watch again (one such wait at a time)."""
        self._expected = max(self._expected, revision)
        if revision <= self.revision or self._expecting is not None or self._kv is None:
            return
        with contextlib.suppress(SupervisorClosed):  # stopping: nothing to watch again
            self._expecting = self._loops.spawn(self._expect(), name=f"kv-expect-{self._bucket}")

    async def _expect(self) -> None:
        try:
            await asyncio.sleep(BEHIND_GRACE_S)
            revision = self._expected  # the latest reported while this waited
            if self.revision >= revision:
                return
            log.warning(
                "KV watch of %s has not delivered revision %d, read from the bucket %.0f s ago"
                " (it applied up to %d); watching again",
                self._bucket,
                revision,
                BEHIND_GRACE_S,
                self.revision,
            )
            try:
                await self._reopen()
            except (NatsError, OSError, TimeoutError) as exc:  # the guard tries again
                log.warning("could not watch %s again (%s)", self._bucket, type(exc).__name__)
        finally:
            self._expecting = None

    async def _server_view(self) -> tuple[int, int] | None:
        """(the last revision the server delivered to the watch, how many it still holds for
        it); None if its consumer is not there (not found, no answer, or no watch open)."""
        sub: Any = self._watcher._sub if self._watcher is not None else None
        if sub is None:
            return None
        try:
            info: Any = await asyncio.wait_for(sub.consumer_info(), _ASK_TIMEOUT_S)
        except (NatsError, TimeoutError):  # not found, no responders, timeout: none working
            return None
        delivered = info.delivered.stream_seq if info.delivered is not None else 0
        return int(delivered), int(info.num_pending or 0)

    async def _reopen(self) -> None:
        """Stop the current watch, let its queued entries be applied, and watch again."""
        async with self._reopening:
            await self._reopen_now()

    async def _reopen_now(self) -> None:
        old, following = self._watcher, self._following
        self._watcher = self._following = None
        if old is not None:
            with contextlib.suppress(Exception):  # its consumer may be gone already
                await old.stop()  # type: ignore[no-untyped-call]
        if following is not None:  # it ends at the stop marker, after what was queued before
            _, late = await asyncio.wait({following}, timeout=_DRAIN_S)
            for task in late:  # no marker (the stop failed): what it did not apply comes again
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.rewatches += 1
        await self._open(None)

    async def stop(self) -> None:
        """Idempotent."""
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await self._watcher.stop()  # type: ignore[no-untyped-call]
            self._watcher = None
        await self._loops.cancel_all()


RETRY_S = 10.0  # how soon a bucket that could not be followed is tried again...
RETRY_MAX_S = 300.0  # ...then twice as long each time, up to this


async def follow_later(
    follow: Callable[[], Awaitable[bool]], retry_s: float = RETRY_S, max_s: float = RETRY_MAX_S
) -> None:
    """Call ``follow`` until it returns True: after ``retry_s``, then twice as long each time
    up to ``max_s`` (a bucket not provisioned yet, or one an older NATS config gives no right
    to: each try waits out a JetStream timeout, in the background)."""
    wait = retry_s
    while True:
        await asyncio.sleep(wait)
        wait = min(wait * 2, max(max_s, retry_s))
        if await try_follow(follow):
            return


async def try_follow(follow: Callable[[], Awaitable[bool]]) -> bool:
    """``follow()``, with any error it did not expect logged and taken as False (not
    followed, tried again): one such error ended the retries for good, the bucket never
    followed until a restart."""
    try:
        return await follow()
    except Exception:  # broad on purpose: a retry loop that any unforeseen error ended (the
        # bucket then never followed until a restart) is worse than one logged failure
        log.exception("a KV bucket was not followed (an unexpected error); tried again later")
        return False
