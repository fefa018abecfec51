"""The timers that bound a provider's stream as it is read, without a timeout scope per read.

A scope per read costs a ``Timeout``, a timer and a cancellation on every chunk (~10% of a
model-proxy's CPU on paced streams). :class:`Watchdog` keeps one timer per deadline instead;
when one passes it closes the response, so the pending (or next) read fails, and ``expired``
says which wait ran out. Three waits:

* the deadline: the first token (``first_token_s``), then the whole stream (``stream_s``);
* the idle gap (``idle_s``), from the answer's first content on: the longest time between two
  chunks. A provider that stalls mid-answer would otherwise hold its caller until
  ``stream_s``, kept alive by the edge's keep-alive comments, which also defeat the client's
  own read timeout. Its clock is lazy: a chunk only notes its time (:attr:`Watchdog.last`),
  and the timer, when it fires early, sets itself again for the gap since the last chunk.
  Time spent downstream is not the provider's: while the reader waits for its consumer to
  take a chunk (:attr:`Watchdog.away`, relay back-pressure) the clock does not run, and it
  starts again when the consumer comes back;
* the grace (:data:`GRACE_S`) once the answer is whole (every choice finished and the usage
  came, or none is due): a provider that never sends ``[DONE]`` nor closes the stream ends
  then, as if it had. Every chunk read after that sets it again: only :data:`GRACE_S` of
  silence ends the stream. Once the answer is whole the idle gap ends it too, the same way
  (:attr:`Watchdog.whole`): an answer that has all its parts is no failure.

The readers that open a timeout scope per read anyway (litellm's, the native streams') bound
each read with :func:`read_by`: the same deadline and idle gap; litellm's adds the grace
itself (its chat answers' choices are counted there), the native streams none.
"""

from __future__ import annotations

import asyncio

import aiohttp

# After the answer is whole, how long to wait for ``[DONE]`` or the end of the response: a
# working provider sends it at once (in the same read, mostly).
GRACE_S = 2.0
FIRST_TOKEN = "the first token"  # noqa: S105  (a wait, not a token)
STREAM_END = "the end of the stream"
WHOLE = "the end of a whole answer"
_GRACE = WHOLE


def read_by(
    first: bool, content: bool, first_by: float, end_by: float, idle_s: float
) -> tuple[float, str]:
    """For a reader with a timeout scope per read (litellm's and the native streams'): by when
    the next read must come, and what it waits for, as the timeout's message says it: the
    first token, then the end of the stream, and once ``content`` began, ``idle_s`` (0: none)
    from now if that comes first."""
    if first:
        return min(first_by, end_by), FIRST_TOKEN
    if content and idle_s > 0:
        idle_by = asyncio.get_running_loop().time() + idle_s
        if idle_by < end_by:
            return idle_by, idle_wait(idle_s)
    return end_by, STREAM_END


def pushed_by(by: float, what: str, spent: float, end_by: float) -> tuple[float, str]:
    """:func:`read_by`'s ``by`` and ``what`` once the reader spent ``spent`` seconds waiting
    for its consumer to take what was no activity (an SSE comment, relayed): an idle gap's end
    moves out by as much (back-pressure is not the provider's silence), within ``end_by``.
    The first token's and the whole stream's bounds do not move."""
    if spent <= 0 or what in (FIRST_TOKEN, STREAM_END):
        return by, what
    if by + spent < end_by:
        return by + spent, what
    return end_by, STREAM_END


def idle_wait(idle_s: float) -> str:
    """What a stream that went idle was waiting for, as its timeout's message says it."""
    return f"the next chunk (none for {idle_s:g} s: timeouts.idle_s)"


class Watchdog:
    """The deadline, idle and grace timers of one streamed response (see the module)."""

    def __init__(self, resp: aiohttp.ClientResponse, when: float, what: str) -> None:
        self._resp = resp
        self._loop = asyncio.get_running_loop()
        self.expired = ""  # the wait that ran out ("" while none did)
        self.whole = False  # it ran out once the answer was whole: the stream ended well
        self.ended = False  # the answer is whole (set by the reader)
        self.last = 0.0  # the loop time of the last chunk (set by the reader)
        self.away = False  # the reader waits for its consumer: no idle time (set by it)
        self._idle_s = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._handle = self._loop.call_at(when, self._fire, what)

    def _fire(self, what: str) -> None:
        self.expired = what
        self.whole = what == _GRACE or (self.ended and what != STREAM_END)
        self._resp.close()

    def rearm(self, when: float, what: str) -> None:
        self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire, what)

    def watch_idle(self, idle_s: float) -> None:
        """Start the idle clock (0: none), at the answer's first content."""
        self.last = self._loop.time()
        if idle_s > 0:
            self._idle_s = idle_s
            self._idle = self._loop.call_at(self.last + idle_s, self._check_idle)

    def _check_idle(self) -> None:
        now = self._loop.time()
        if self.away:  # the consumer has the chunk: the gap starts when it is back
            self._idle = self._loop.call_at(now + self._idle_s, self._check_idle)
            return
        due = self.last + self._idle_s
        if now < due:  # a chunk came since: wait for the gap after it
            self._idle = self._loop.call_at(due, self._check_idle)
        else:
            self._fire(idle_wait(self._idle_s))

    def grace(self, end_by: float) -> None:
        """The answer is whole: end the stream :data:`GRACE_S` from now (again at each chunk
        read after that: only that much silence ends it)."""
        self.rearm(min(self._loop.time() + GRACE_S, end_by), _GRACE)

    def cancel(self) -> None:
        self._handle.cancel()
        if self._idle is not None:
            self._idle.cancel()
