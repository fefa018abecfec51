"""A request delivered again: a stream's caller is asked first, before the provider is called.

A model-proxy killed (or frozen past ``ack_wait_s``) while it served a request leaves the
request to be delivered again. When part of a streamed answer already reached the caller, the
caller cannot take a second delivery's chunks after the first's (the answer would restart in
the middle of the stream), so it ends the stream (``stream_interrupted``) and cancels the
request. It used to learn of the second delivery from its first chunk, after that copy's
provider call had started: a wasted call, whose prompt the provider bills. So a redelivered
stream first announces its delivery (a keep-alive naming it, ``Sy-Attempt``) and waits up to
:data:`ASK_S` for a cancel, which ends the wait at once (``Job.stop``); a caller that had no
content yet takes the new delivery and stays silent, and its request starts :data:`ASK_S`
later (after ``ack_wait_s`` of redelivery, a small part). The earlier delivery's call is billed
by the copy its caller cancelled (:attr:`Job.streamed_before`). Non-streamed answers go out
whole at the end, so a redelivered one is simply served; but one sent in parts (to a caller
that reads them, ``Sy-Parts-Max``) may have been cut after some of them, so such a caller is
asked as a stream's is, where an earlier delivery could have sent parts (:func:`asks`): not
for a token count (a small answer), nor for a caller whose room is one message anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS

from switchyard.bus import replies
from switchyard.bus.envelope import Envelope, MalformedHeader
from switchyard.dialects.probes import COUNTS
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.whole import AnswerRooms

log = logging.getLogger("switchyard.modelproxy")

ASK_S = 0.5  # a cancel crosses an edge and back in milliseconds; a loaded one, in tenths


def asks(env: Envelope, room: int, one_message: int) -> bool:
    """Whether a redelivered request's caller is asked first: a stream's, or one whose earlier
    delivery could have sent its whole answer in parts (its answer may be past ``one_message``:
    ``room``, the bound :class:`AnswerRooms` gives it, is more), which is never a token count
    (its answer is a few bytes). Every other one is served at once, as before parts."""
    return env.stream or (room > one_message and env.op not in COUNTS)


async def ask_caller(nc: NATS, job: Job, rooms: AnswerRooms) -> None:
    """Log the redelivery; for a stream (or a caller that may hold parts: :func:`asks`),
    announce it and wait for a cancel (``job.cancelled`` says whether one came)."""
    log.info("serving a request delivered %d times", job.msg.metadata.num_delivered)
    if job.cancelled:
        return
    try:  # (a malformed Sy-Parts-Max is refused where the envelope is read: never here)
        room = rooms.of(nc.max_payload, "" if job.stream else job.env.parts_max)
    except MalformedHeader:
        return
    # A caller that reads parts may hold some of an earlier delivery's whole answer
    # (switchyard.bus.parts): asked as a stream's caller is, as it cannot take this one's.
    if not asks(job.env, room, replies.payload_room(nc.max_payload)):
        return
    try:
        await replies.announce_delivery(nc, job.reply, job.delivery, job.env.placement)
    except Exception:  # the connection is gone: served as before, its replies will tell
        log.debug("could not announce a redelivered stream", exc_info=True)
        return
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ASK_S) as scope:
                job.stop = scope  # a cancel reschedules it to now (cancels.Cancels.heard)
                await asyncio.sleep(2 * ASK_S)
    finally:  # (also when the worker stops meanwhile: a later cancel must not touch it)
        job.stop = None
    # A cancel now answers the announcement: the caller had content from an earlier delivery,
    # whose model-proxy died before it billed its provider call. Billed here, as a call its
    # caller left (estimated: the prompt; the earlier chunks are not known here).
    job.streamed_before = job.cancelled
