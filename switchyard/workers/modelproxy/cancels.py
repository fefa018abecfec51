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

A cancel counts only for the client key that made the request, and names it without carrying
it: ``Sy-Cancel-Proof`` is an HMAC of the request id keyed by the key's hash
(:mod:`switchyard.bus.cancel_proof`), which cancels that one request id and nothing else. An
edge (or the batch runner) may instead name the key by its hash, as it did for the request (its
NATS identity is trusted for that); a cancel that presents the key itself in ``Authorization``
(an older client) still counts. Both are turned into the same proof here, and the key is never
logged. The check against the request's own key happens when the request is met (served or
pulled), so a cancel naming another key's request changes nothing. It ends the attempts up to
the one it names (``Sy-Attempt``), not a later re-send of the same request id. The memory is
bounded in count and in time, whatever callers send.

The server also stores every cancel (stream ``CANCELS``): a model-proxy that was not running
when one was sent reads them back into its memory before it pulls any work
(:mod:`.stored_cancels`), each through :meth:`Cancels.heard` like a live one, remembered from
the time the server stored it.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import hmac
import time
from collections.abc import Callable

from switchyard.bus import headers as h
from switchyard.bus import identities
from switchyard.bus.cancel_proof import cancel_proof, parse_proof, presented_key_hash
from switchyard.bus.envelope import Envelope, MalformedHeader, refuse_misspelled
from switchyard.bus.request_info import caller_identity
from switchyard.runtime.definitions import CANCELS_MAX_AGE_S, CANCELS_MAX_MSGS
from switchyard.workers.modelproxy.job import Job

# At most this many cancels are remembered (about 600 bytes each with their request id and
# proof: some 12 MB at worst); past it, the one closest to its end is forgotten first. The
# CANCELS stream keeps as many.
CAPACITY = CANCELS_MAX_MSGS
# How long a cancel is remembered: until the request's deadline (a request past it is dropped
# unserved anyway), never longer than the longest deadline an edge grants (the CANCELS stream's
# age limit); a cancel that names no deadline, for as long as the edges' default deadline.
LONGEST_S = CANCELS_MAX_AGE_S
DEFAULT_S = 600.0
MAX_ATTEMPT = 1000  # the highest Sy-Attempt a request may carry


# Why a message on llm.v1.cancel is no cancel (the ``reason`` of the refused cancels' count).
NO_REQUEST_ID = "no_request_id"
INVALID_HEADER = "invalid_header"  # malformed, or spelled in another case
NO_PROOF = "no_proof"  # no key named: no (valid) Sy-Cancel-Proof, key hash or Authorization


class NoCancel(MalformedHeader):
    """A message on ``llm.v1.cancel`` that cancels nothing: the 400 ``invalid_header`` a
    request with the same headers would get, with why (``reason``, one of a few words)."""

    def __init__(self, reason: str, header: str, problem: str) -> None:
        super().__init__(header, problem)
        self.reason = reason


class CancelMemory:
    """Recent cancels by request id, each with its proof: until when, and up to which attempt.

    A cancel ends the attempts of a request up to the one it names: a caller that sends the
    same request id again later with a higher ``Sy-Attempt`` (the batch runner resuming a line
    after a restart) is served. ``holds`` is on the path of every pulled request: with nothing
    remembered it is one emptiness check, else one dict lookup by request id; only a request
    id that was cancelled costs an HMAC, to check the proof against the request's own key.
    Proofs are kept apart per request id (another key's cancel of the same id neither counts
    nor displaces the owner's). The bookkeeping (a heap ordered by expiry, which also picks
    what to forget when full) happens when a cancel arrives.
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
        # request id -> proof -> (until, attempt)
        self._kept: dict[str, dict[str, tuple[float, int]]] = {}
        self._count = 0  # proofs kept, over all request ids
        self._expiries: list[tuple[float, str, str]] = []  # a heap, one entry per kept proof

    def __len__(self) -> int:
        return self._count

    def remember(
        self,
        request_id: str,
        proof: str,
        *,
        attempt: int,
        deadline: float | None,
        sent_at: float | None = None,
    ) -> None:
        """Remember a cancel of ``request_id`` (attempts up to ``attempt``) with ``proof``
        (:func:`~switchyard.bus.cancel_proof.cancel_proof` of the key it was made with).

        Args:
            deadline: the request's deadline (unix seconds), if the cancel named it.
            sent_at: when the cancel was sent (unix seconds; default now): the limits of
                time count from it, so a stored cancel read later is not kept longer.
        """
        now = self._clock()
        self._forget_expired(now)
        began = now if sent_at is None else min(sent_at, now)
        longest = began + self._longest_s
        until = min(deadline, longest) if deadline is not None else began + self._default_s
        if until <= now:
            return  # the request is past its deadline: no model-proxy serves it now
        proofs = self._kept.get(request_id)
        kept = proofs.get(proof) if proofs is not None else None
        if proofs is not None and kept is not None:
            # A later attempt cancelled too: the heap entry is moved lazily.
            proofs[proof] = (max(kept[0], until), max(kept[1], attempt))
            return
        while self._count >= self._capacity:
            old_until, old_id, old_proof = heapq.heappop(self._expiries)
            until_now, _ = self._kept[old_id][old_proof]
            if until_now > old_until:  # extended by a later cancel: back at its new time
                heapq.heappush(self._expiries, (until_now, old_id, old_proof))
            else:
                self._drop(old_id, old_proof)
        self._kept.setdefault(request_id, {})[proof] = (until, attempt)
        self._count += 1
        heapq.heappush(self._expiries, (until, request_id, proof))

    def holds(self, request_id: str, key_hash: str, attempt: int, presented_hash: str = "") -> bool:
        """True if the caller of this attempt of ``request_id`` (made with the key hashed
        ``key_hash``, its caller presenting the secret hashed ``presented_hash`` if another:
        see :func:`proving_hashes`) cancelled it."""
        if not self._kept:
            return False
        proofs = self._kept.get(request_id)
        if proofs is None:
            return False
        now = self._clock()
        for digest in (key_hash, presented_hash):
            if not digest:  # a request made with no key is never cancelled
                continue
            # A dict lookup, not a scan with compare_digest: nothing about the timing of this
            # check reaches whoever sent a proof, and a flood of wrong proofs for one request
            # id must not make its check slow.
            kept = proofs.get(cancel_proof(digest, request_id))
            if kept is not None and attempt <= kept[1] and kept[0] > now:
                return True
        return False

    def _drop(self, request_id: str, proof: str) -> None:
        proofs = self._kept[request_id]
        del proofs[proof]
        if not proofs:
            del self._kept[request_id]
        self._count -= 1

    def _forget_expired(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, request_id, proof = heapq.heappop(expiries)
            until, _ = self._kept[request_id][proof]
            if until > now:  # extended by a later cancel: back in the heap at its new time
                heapq.heappush(expiries, (until, request_id, proof))
            else:
                self._drop(request_id, proof)


def proving_hashes(env: Envelope) -> tuple[str, ...]:
    """The key hashes a cancel of the dispatched request ``env`` may be proved with: the key's
    current one, and the one its caller presented if the head named another (``presented_hash``:
    an old secret, on a request made during its rotation's grace), for the request's whole
    life: its maker may cancel it after the grace (a proof is per request id, which only the
    maker knows). Both are the head's, so a proof stays one only the key's holder can make."""
    return tuple(d for d in (env.key_hash, env.presented_hash) if d)


def cancelling_proof(headers: dict[str, str], env: Envelope) -> str:
    """The proof a cancel is made with ("" when it names no key).

    ``Sy-Cancel-Proof`` as sent; else derived from the key hash a trusted edge (or the batch
    runner) names, or from the key an older caller presents in ``Authorization``.
    """
    proof = parse_proof(headers.get(h.CANCEL_PROOF))
    if proof:
        return proof
    if caller_identity(headers) in identities.KEY_HASH_CALLERS:
        digest = env.key_hash
    else:
        digest = presented_key_hash(env.authorization)
    return cancel_proof(digest, env.request_id) if digest else ""


def read_cancel(headers: dict[str, str] | None) -> tuple[Envelope, str] | NoCancel:
    """A cancel's envelope and proof; or, for a message that is no cancel, the 400 a request
    with the same headers would get: no request id, a malformed or wrongly cased header
    (``Sy-Deadline`` in seconds, ``sy-cancel-proof``), no key named (no ``Sy-Cancel-Proof``,
    or not 64 hex digits)."""
    try:
        refuse_misspelled(headers)  # first: a ``sy-request-id`` is misspelled, not missing
        if not headers or not headers.get(h.REQUEST_ID):
            return NoCancel(NO_REQUEST_ID, h.REQUEST_ID, "missing: name the request to cancel")
        env = Envelope.decode(headers)
    except MalformedHeader as exc:
        return NoCancel(
            INVALID_HEADER, exc.header, exc.message.removeprefix(f"header {exc.header}: ")
        )
    proof = cancelling_proof(headers, env)
    if not proof:
        return NoCancel(
            NO_PROOF,
            h.CANCEL_PROOF,
            "missing or not 64 hex digits: a cancel names its request's key with this "
            "proof (docs/nats-api.md, Cancelling a request)",
        )
    return env, proof


class Cancels:
    """The requests this process is serving, by request id, and the cancels it heard."""

    def __init__(self, memory: CancelMemory | None = None) -> None:
        self.memory = memory if memory is not None else CancelMemory()
        self._serving: dict[str, list[Job]] = {}

    def left(self, env: Envelope) -> bool:
        """True if the caller of this dispatched request cancelled it (it is still queued)."""
        return self.memory.holds(env.request_id, env.key_hash, env.attempt, env.presented_hash)

    def track(self, job: Job) -> None:
        job.inflight.gone = functools.partial(self.gone, job)  # (.probes)
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

    def heard(self, headers: dict[str, str] | None, *, sent_at: float | None = None) -> bool:
        """A cancel arrived: remember it, and stop the request if it is being served here.

        Args:
            sent_at: when it was sent (unix seconds), for a stored cancel read back.

        Returns:
            False for a message that is no cancel (see :meth:`hear`), which changes nothing.
        """
        return self.hear(headers, sent_at=sent_at) is None

    def hear(
        self, headers: dict[str, str] | None, *, sent_at: float | None = None
    ) -> NoCancel | None:
        """As :meth:`heard`, saying why a message is no cancel.

        Returns:
            None for a cancel; else why it is none (:func:`read_cancel`).
        """
        read = read_cancel(headers)
        if isinstance(read, NoCancel):
            return read
        env, proof = read
        # A cancel that names no attempt ends every attempt so far (LLMClient names it).
        attempt = env.attempt if h.ATTEMPT in (headers or {}) else MAX_ATTEMPT
        deadline = env.deadline.timestamp if env.deadline is not None else None
        self.memory.remember(
            env.request_id, proof, attempt=attempt, deadline=deadline, sent_at=sent_at
        )
        for job in self._serving.get(env.request_id, ()):
            if (
                job.cancelled
                or job.done  # answered already: nothing left to stop
                or job.env.attempt > attempt
                or not any(  # made with no key (no hash): never cancelled
                    hmac.compare_digest(proof, cancel_proof(digest, env.request_id))
                    for digest in proving_hashes(job.env)
                )
            ):
                continue
            self.gone(job)
        return None

    @staticmethod
    def gone(job: Job) -> None:
        """``job``'s caller left: stop it (the provider call at once, if under way). Also for
        a caller that stopped answering its probes (:mod:`.probes`) without a cancel, which
        is billed the same way, and remembered nowhere (no proof came with it)."""
        if job.cancelled or job.done:  # answered already: nothing to stop
            return
        job.cancelled = True
        if job.parts_stop is not None:  # its answer's parts are going out: no more of them
            job.parts_stop.set()
        if job.stop is not None:  # the provider call is under way: interrupt it now
            job.stop.reschedule(asyncio.get_running_loop().time())
