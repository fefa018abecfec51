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
``Sy-Begun``) when the first chunk is held, or when an adapter that holds its own opening says
it holds one (an event without payload or usage): an HTTP edge whose client's SDK times the
wait for the response headers (``X-Stainless-Timeout``) sends them before that wait runs out,
rather than a 504 for a stream that is on its way (a reasoning model sends its role at once,
then thinks for minutes).

Other streams (native dialects hold their own opening: :mod:`.providers.native_stream`)
are sent chunk by chunk as before. Once content went out every chunk passes unread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.key_echo import EchoedKeys
from switchyard.workers.modelproxy.providers.base import StreamEvent
from switchyard.workers.modelproxy.providers.chunk_content import has_content

# The ops whose chunks are OpenAI chunks, read for content until the first that has some.
HELD_OPS = frozenset({"chat", "complete"})
# Past either, held chunks are sent and holding ends (see the module).
HELD_CHUNKS = 32
HELD_BYTES = 64 * 1024
Send = Callable[[Job, int, bytes], Awaitable[None]]
Begun = Callable[[Job], Awaitable[None]]


async def relay(
    job: Job,
    events: AsyncIterator[StreamEvent],
    send: Send,
    *,
    echoed: EchoedKeys,
    key: bytes,
    provider: str,
    begun: Begun | None = None,
) -> None:
    """Send ``events``' chunks to ``job``'s caller (``key`` masked), recording its usage, its
    time to the first content and what was sent; returns early once the caller left.
    ``begun``: tells the caller the provider began while its opening is held (once)."""
    loop = asyncio.get_running_loop()
    held: list[bytes] | None = [] if job.env.op in HELD_OPS else None  # None: none held now
    held_bytes = 0
    looking = held is not None  # the first content is still to come (its time is measured)
    seq = 0
    async for event in events:
        if job.cancelled:
            return  # the caller left: the handler stops the provider call
        if event.usage is not None:
            job.usage = event.usage
        if event.payload is None:
            if begun is not None and event.usage is None and not job.sent:
                await begun(job)  # an adapter holds its opening (see the module)
                begun = None
            continue
        payload = echoed.masked(event.payload, key, provider)
        if held is not None:
            held.append(payload)
            held_bytes += len(payload)
            if has_content(payload):
                _first_content(job)
                looking = False
            elif len(held) < HELD_CHUNKS and held_bytes < HELD_BYTES:
                if begun is not None:
                    await begun(job)
                    begun = None
                continue
            for payload in held:  # content came, or too much was held: all of it goes now
                job.chunks.append(payload)
                await send(job, seq, payload)
                seq += 1
            held = None
            job.sent = True
            job.inflight.touch(loop.time())
            continue
        job.chunks.append(payload)
        await send(job, seq, payload)
        if seq == 0 or (looking and has_content(payload)):
            _first_content(job)
            looking = False
        seq += 1
        job.sent = True
        job.inflight.touch(loop.time())
    for payload in held or ():  # a stream without content: sent whole at its end
        job.chunks.append(payload)
        await send(job, seq, payload)
        seq += 1
        job.sent = True


def _first_content(job: Job) -> None:
    now = time.time()
    job.ttft = now - job.started
    job.ttfc = now - job.called_at
