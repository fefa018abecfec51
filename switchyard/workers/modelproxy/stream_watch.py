"""A provider's stream relayed to its caller, chunk by chunk, from the handler's provider call.

Nothing of the answer reached the caller while only opening chunks came: a role alone
(``{"delta": {"role": "assistant", "content": ""}}``), Azure's ``prompt_filter_results``. Sent
at once, they made the request "sent": a reset or an in-stream error right after them ended
the stream with an error event, though a fallback deployment could still have answered
(docs/routing.md promises a retry "before any content reached the client"), and the time to
the first token was measured at an empty chunk. So chat and legacy completion streams hold
such chunks back (:func:`~.providers.chunk_content.has_content`) until the first that carries
content, then send them all, in order: nothing lost, and after a reroute the next deployment's
own opening is the only one the caller gets. A stream that ends with none is sent whole at its
end.

Held chunks went nowhere yet, so they do not count as messages to the caller
(``InFlight.touch`` is for those): the caller's keep-alives keep going out while they wait. A
long hold (a reasoning model streaming empty deltas while it thinks, for minutes) had stopped
them, and after ``nats.response_threshold_s`` without a message the caller's reply mapping
was dropped and the content went nowhere. Holding is bounded too: past :data:`HELD_CHUNKS`
chunks or :data:`HELD_BYTES` bytes, the held chunks are sent and the rest pass as they come
(the fallback chance is gone then: a stream that long with nothing in it is no opening).
A real opening is one to three chunks (the role, Azure's prompt filter results, a usage-less
keep-alive) of well under 4 KiB, so the bounds leave room for ten times that and keep what
a placeholder stream can pile up in memory small.

The caller hears once that the provider began (``replies.send_begun``: a keep-alive marked
``Sy-Begun``) :data:`BEGUN_AFTER_S` after the first chunk is held, or after an adapter that
holds its own opening says it holds one (an event without payload or usage), unless content
came first: most providers send content within milliseconds of their role chunk, and a message
more per stream is a cost every stream would pay for the rare slow one. An HTTP edge whose
client's SDK times the wait for the response headers (``X-Stainless-Timeout``) sends them
before that wait runs out, rather than a 504 for a stream that is on its way (a reasoning model
sends its role at once, then thinks for minutes).

Other streams (native dialects hold their own opening: :mod:`.providers.native_stream`)
are sent chunk by chunk as before. Once content went out every chunk passes unread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.key_echo import EchoedKeys
from switchyard.workers.modelproxy.providers.base import StreamEvent
from switchyard.workers.modelproxy.providers.chunk_content import has_content

log = logging.getLogger("switchyard.modelproxy")

# The ops whose chunks are OpenAI chunks, read for content until the first that has some.
HELD_OPS = frozenset({"chat", "complete"})
# Past either, held chunks are sent and holding ends (see the module).
HELD_CHUNKS = 32
HELD_BYTES = 64 * 1024
Send = Callable[[Job, int, bytes], Awaitable[None]]
Begun = Callable[[Job], Awaitable[None]]
# A held opening is said to the caller only once it has waited this long (see the module): far
# below the shortest SDK timeout an edge starts a stream ahead of (it starts it 2 s before, or
# halfway through one under 4 s).
BEGUN_AFTER_S = 0.2


class _Herald:
    """Says once, :data:`BEGUN_AFTER_S` after :meth:`held`, that the provider began, unless
    :meth:`done` (content went out, or the stream ended) came first."""

    __slots__ = ("_begun", "_job", "_task", "_timer")

    def __init__(self, begun: Begun | None, job: Job) -> None:
        self._begun = begun
        self._job = job
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def held(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._begun is not None and self._timer is None:
            self._timer = loop.call_later(BEGUN_AFTER_S, self._say)

    def _say(self) -> None:
        if self._begun is not None and not self._job.sent and not self._job.cancelled:
            self._task = asyncio.ensure_future(self._begun(self._job))
        self._begun = None

    async def done(self) -> None:
        self._begun = None
        if self._timer is not None:
            self._timer.cancel()
        task, self._task = self._task, None
        if task is not None:  # a publish already under way: before what follows it
            try:
                await task
            except Exception as exc:  # noqa: BLE001  (a keep-alive is best effort: the
                # provider's own error, if one is on its way, must not be hidden by it)
                log.warning("the provider-began keep-alive was not sent: %s", exc)


async def relay(
    job: Job,
    events: AsyncIterator[StreamEvent],
    send: Send,
    *,
    echoed: EchoedKeys,
    key: bytes,
    provider: str,
    begun: Begun | None = None,
) -> bytes | None:
    """Send ``events``' chunks to ``job``'s caller (``key`` masked), recording its usage, its
    time to the first content and what was sent; returns early once the caller left.
    ``begun``: tells the caller the provider began while its opening is held (once).

    Returns:
        the last chunk sent (masked), or None when none was (or the caller left): what a
        usage chunk of Switchyard's takes its ``id`` and ``model`` from (:mod:`.shown_usage`).
    """
    loop = asyncio.get_running_loop()
    herald = _Herald(begun, job)
    try:
        return await _relay(
            job, events, send, echoed=echoed, key=key, provider=provider, herald=herald, loop=loop
        )
    finally:
        await herald.done()


async def _relay(
    job: Job,
    events: AsyncIterator[StreamEvent],
    send: Send,
    *,
    echoed: EchoedKeys,
    key: bytes,
    provider: str,
    herald: _Herald,
    loop: asyncio.AbstractEventLoop,
) -> bytes | None:
    held: list[bytes] | None = [] if job.env.op in HELD_OPS else None  # None: none held now
    held_bytes = 0
    looking = held is not None  # the first content is still to come (its time is measured)
    seq = 0
    payload = b""  # (the last chunk sent, once the loops end: returned)
    async for event in events:
        if job.cancelled:
            return None  # the caller left: the handler stops the provider call
        if event.usage is not None:
            job.usage = event.usage
        if event.payload is None:
            if event.usage is None and not job.sent:
                herald.held(loop)  # an adapter holds its opening (see the module)
            continue
        payload = echoed.masked(event.payload, key, provider)
        if held is not None:
            held.append(payload)
            held_bytes += len(payload)
            if has_content(payload):
                _first_content(job)
                looking = False
            elif len(held) < HELD_CHUNKS and held_bytes < HELD_BYTES:
                herald.held(loop)
                continue
            await herald.done()  # before the first chunk, if it is already being said
            for payload in held:  # content came, or too much was held: all of it goes now
                job.chunks.append(payload)
                await send(job, seq, payload)
                seq += 1
            held = None
            job.sent = True
            job.inflight.touch(loop.time())
            continue
        if seq == 0:
            await herald.done()  # an adapter's held opening ends with its first chunk
        job.chunks.append(payload)
        await send(job, seq, payload)
        if seq == 0 or (looking and has_content(payload)):
            _first_content(job)
            looking = False
        seq += 1
        job.sent = True
        job.inflight.touch(loop.time())
    await herald.done()  # before anything of a stream that ends without content
    for payload in held or ():  # a stream without content: sent whole at its end
        job.chunks.append(payload)
        await send(job, seq, payload)
        seq += 1
        job.sent = True
    return payload if seq else None


def _first_content(job: Job) -> None:
    now = time.time()
    job.ttft = now - job.started
    job.ttfc = now - job.called_at
