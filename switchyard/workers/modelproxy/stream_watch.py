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
end. Other streams (native dialects hold their own opening: :mod:`.providers.native_stream`)
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
Send = Callable[[Job, int, bytes], Awaitable[None]]


async def relay(
    job: Job,
    events: AsyncIterator[StreamEvent],
    send: Send,
    *,
    echoed: EchoedKeys,
    key: bytes,
    provider: str,
) -> None:
    """Send ``events``' chunks to ``job``'s caller (``key`` masked), recording its usage, its
    time to the first content and what was sent; returns early once the caller left."""
    loop = asyncio.get_running_loop()
    held: list[bytes] | None = [] if job.env.op in HELD_OPS else None  # None: none held now
    seq = 0
    async for event in events:
        if job.cancelled:
            return  # the caller left: the handler stops the provider call
        if event.usage is not None:
            job.usage = event.usage
        if event.payload is None:
            continue
        payload = echoed.masked(event.payload, key, provider)
        if held is not None:
            held.append(payload)
            job.inflight.touch(loop.time())
            if not has_content(payload):
                continue
            _first_content(job)
            for payload in held:
                job.chunks.append(payload)
                await send(job, seq, payload)
                seq += 1
            held = None
            job.sent = True
            continue
        job.chunks.append(payload)
        await send(job, seq, payload)
        if seq == 0:
            _first_content(job)
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
