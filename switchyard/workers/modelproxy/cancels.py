"""Callers that left: ``llm.v1.cancel``, for requests in hand and for requests still queued.

A caller that gives up (an HTTP client that disconnected, an internal caller that closed its
reply iterator) sends one cancel, which every model-proxy hears. Two things are done with it:

* a request this process is serving for that caller is stopped: its provider call is
  interrupted at once (:attr:`Job.stop`), nothing is answered, and it is billed for what a
  cancelled call costs;
* the cancel is remembered for a while (:class:`CancelMemory`), so a request still waiting in a
  deployment's queue, or held by a head for fair order, is acknowledged without a provider call
  when some model-proxy pulls it. Without this, under overload every client timeout (and every
  SDK retry after it) leaves dead work in the queue that is served later for nobody.

A cancel counts only for the client key that made the request: an edge (or the batch runner)
names the key by its hash, as it did for the request; any other caller presents the key itself.
The check against the request's own key happens when the request is met (served or pulled), so
a cancel naming another key's request changes nothing. It ends the attempts up to the one it
names (``Sy-Attempt``), not a later re-send of the same request id. The memory is bounded in
count and in time, whatever callers send.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import time
from collections.abc import Callable

from switchyard.bus import headers as h
from switchyard.bus import identities
from switchyard.bus.envelope import Envelope, MalformedHeader
from switchyard.bus.headers import bearer_token
from switchyard.bus.request_info import caller_identity
from switchyard.schemas.keys import hash_key
from switchyard.workers.modelproxy.job import Job

# At most this many cancels are remembered (about 300 bytes each: a few MB at worst); past it,
# the one closest to its end is forgotten first.
CAPACITY = 20_000
# How long a cancel is remembered: until the request's deadline (a request past it is dropped
# unserved anyway), never longer than the longest deadline an edge grants; a cancel that names
# no deadline, for as long as the edges' default deadline.
LONGEST_S = 3600.0
DEFAULT_S = 600.0
MAX_ATTEMPT = 1000  # the highest Sy-Attempt a request may carry


class CancelMemory:
    """Recent cancels by (request id, key hash): until when, and up to which attempt.

    A cancel ends the attempts of a request up to the one it names: a caller that sends the
    same request id again later with a higher ``Sy-Attempt`` (the batch runner resuming a line
    after a restart) is served. ``holds`` is on the path of every pulled request: with nothing
    remembered it is one emptiness check, else one dict lookup. The bookkeeping (a heap ordered
    by expiry, which also picks what to forget when full) happens when a cancel arrives.
    """

    def __init__(
        self,
        *,
        capacity: int = CAPACITY,
        longest_s: float = LONGEST_S,
        default_s: float = DEFAULT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._capacity = capacity
        self._longest_s = longest_s
        self._default_s = default_s
        self._clock = clock
        self._kept: dict[tuple[str, str], tuple[float, int]] = {}  # -> (until, attempt)
        self._expiries: list[tuple[float, str, str]] = []  # a heap, one entry per kept cancel

    def __len__(self) -> int:
        return len(self._kept)

    def remember(
        self, request_id: str, key_hash: str, *, attempt: int, deadline: float | None
    ) -> None:
        """Remember a cancel of ``request_id`` (attempts up to ``attempt``) by the key hashed
        ``key_hash``.

        Args:
            deadline: the request's deadline (unix seconds), if the cancel named it.
        """
        now = self._clock()
        self._forget_expired(now)
        longest = now + self._longest_s
        until = min(deadline, longest) if deadline is not None else now + self._default_s
        if until <= now:
            return  # the request is past its deadline: no model-proxy serves it now
        entry = (request_id, key_hash)
        kept = self._kept.get(entry)
        if kept is not None:  # a later attempt cancelled too: the heap entry is moved lazily
            self._kept[entry] = (max(kept[0], until), max(kept[1], attempt))
            return
        if len(self._kept) >= self._capacity:
            _, old_id, old_hash = heapq.heappop(self._expiries)
            del self._kept[old_id, old_hash]
        self._kept[entry] = (until, attempt)
        heapq.heappush(self._expiries, (until, request_id, key_hash))

    def holds(self, request_id: str, key_hash: str, attempt: int) -> bool:
        """True if the caller of this attempt of ``request_id`` (made with the key hashed
        ``key_hash``) cancelled it."""
        if not self._kept:
            return False
        kept = self._kept.get((request_id, key_hash))
        return kept is not None and attempt <= kept[1] and kept[0] > self._clock()

    def _forget_expired(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, request_id, key_hash = heapq.heappop(expiries)
            until, _ = self._kept[request_id, key_hash]
            if until > now:  # extended by a later cancel: back in the heap at its new time
                heapq.heappush(expiries, (until, request_id, key_hash))
            else:
                del self._kept[request_id, key_hash]


def cancelling_key(headers: dict[str, str], env: Envelope) -> str:
    """The hash of the client key a cancel is made with ("" when it names none)."""
    if caller_identity(headers) in identities.KEY_HASH_CALLERS:
        return env.key_hash
    token = bearer_token(env.authorization) or env.authorization.strip()
    return hash_key(token) if token else ""


class Cancels:
    """The requests this process is serving, by request id, and the cancels it heard."""

    def __init__(self, memory: CancelMemory | None = None) -> None:
        self.memory = memory if memory is not None else CancelMemory()
        self._serving: dict[str, list[Job]] = {}

    def left(self, env: Envelope) -> bool:
        """True if the caller of this dispatched request cancelled it (it is still queued)."""
        return self.memory.holds(env.request_id, env.key_hash, env.attempt)

    def track(self, job: Job) -> None:
        jobs = self._serving.get(job.env.request_id)
        if jobs is None:
            self._serving[job.env.request_id] = [job]
        else:
            jobs.append(job)  # a redelivery or a re-send, served here at the same time

    def untrack(self, job: Job) -> None:
        jobs = self._serving.get(job.env.request_id)
        if jobs is not None:
            jobs.remove(job)
            if not jobs:
                del self._serving[job.env.request_id]

    def heard(self, headers: dict[str, str] | None) -> None:
        """A cancel arrived: remember it, and stop the request if it is being served here."""
        if not headers or not headers.get(h.REQUEST_ID):
            return
        try:
            env = Envelope.decode(headers)
        except MalformedHeader:
            return
        digest = cancelling_key(headers, env)
        if not digest:
            return
        # A cancel that names no attempt ends every attempt so far (LLMClient names it).
        attempt = env.attempt if h.ATTEMPT in headers else MAX_ATTEMPT
        deadline = env.deadline.timestamp if env.deadline is not None else None
        self.memory.remember(env.request_id, digest, attempt=attempt, deadline=deadline)
        for job in self._serving.get(env.request_id, ()):
            if (
                job.cancelled
                or job.answer is not None  # answered already: nothing left to stop
                or job.env.attempt > attempt
                or not hmac.compare_digest(digest, job.env.key_hash)
            ):
                continue
            job.cancelled = True
            if job.stop is not None:  # the provider call is under way: interrupt it now
                job.stop.reschedule(asyncio.get_running_loop().time())
