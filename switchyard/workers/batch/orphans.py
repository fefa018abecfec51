"""The lines a runner that died left on the bus, withdrawn when its batch was cancelled meanwhile.

A runner killed (SIGKILL, a lost machine) while its lines wait in a deployment's queue leaves
them there: they are served later for nobody, and billed. When the batch is then cancelled
before a runner runs again (the cancel only marks it ``cancelling``), the next runner used to
end it at once: those lines still ran at the provider, billed to the batch's key, and none of
them had a row in the output (a team cancelling 100 lines of which 8 had run was billed 72).

So a runner that takes up a cancelled batch which ran before sends, for each line that may
still be on the bus, the ``llm.v1.cancel`` a live runner's withdrawal sends: a line still
queued is dropped unserved when a model-proxy pulls it (not run, not billed), as the Batch
API's cancel promises. A runner holds at most ``batch.max_in_flight`` lines of a batch started
and not ended, taken in file order, so the lines it left on the bus are among the first
``max_in_flight`` lines with no recorded result (those answered since only shrink that set).
Each cancel names the highest attempt a request may carry, ending every earlier run's copy of
the line (one a provider is answering is stopped too, billed what it cost); the batch is
cancelled, so no later attempt is ever sent. Up to ``max_in_flight`` lines per batch (twice
that after a key rotation): which of them the dead runner held is not known, so a bound over
all batches would leave a later batch's queued lines running (a runner-wide bound tried here
was reverted for that); many batches cancelled while no runner ran send many cancels.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Container, Iterable

from nats.aio.client import Client as NATS

from switchyard.bus import pings, subjects
from switchyard.bus.cancel_proof import cancel_headers
from switchyard.bus.envelope import Deadline, Envelope

# The highest ``Sy-Attempt`` a request may carry (the envelope's limit): a cancel naming it
# ends every attempt of the request.
LAST_ATTEMPT = 1000


def unanswered(total: int, done: Container[int], limit: int) -> list[int]:
    """The first ``limit`` line numbers (1 to ``total``) with no recorded result."""
    missing = (index for index in range(1, total + 1) if index not in done)
    return list(itertools.islice(missing, limit))


async def withdraw(
    nc: NATS,
    batch_id: str,
    lines: Iterable[int],
    key_hashes: Iterable[str],
    remembered_s: float,
) -> int:
    """Send the cancel of each of ``lines`` of batch ``batch_id``, proved with each of
    ``key_hashes`` (the key's hashes its lines may have gone out under: the one the batch was
    made with, and its current secret's after a rotation), to be remembered ``remembered_s``
    (a line's deadline at most: a copy past it is dropped unserved anyway). How many were
    sent; best effort, as every cancel."""
    hashes = [key_hash for key_hash in dict.fromkeys(key_hashes) if key_hash]
    deadline = Deadline.after(remembered_s)
    sent = 0
    for index in lines:
        for key_hash in hashes:
            env = Envelope(request_id=f"{batch_id}:{index}", deadline=deadline, key_hash=key_hash)
            headers = cancel_headers(env, LAST_ATTEMPT, ("", ""))
            if headers is None:
                continue
            with contextlib.suppress(Exception):
                await nc.publish(subjects.CANCEL, b"", headers=headers)
                sent += 1
    if sent:
        await pings.answered(nc, 5)  # (never a flush cut short: bus/pings.py)
    return sent
