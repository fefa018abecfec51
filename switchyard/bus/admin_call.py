"""Request-reply to an admin service (secrets, control) with typed errors.

Admin services answer with ``Sy-Status`` and an OpenAI-shaped error body on failure; this turns
that back into the same :class:`~switchyard.errors.ApiError` on the caller's side, and a missing
service into a clear 503.
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus.envelope import Deadline
from switchyard.bus.replies import ReplyKind, decode_reply, error_from_reply
from switchyard.errors import ServiceUnavailable

ACTOR = "Sy-Actor"
# "No responders" is retried this long before it becomes a 503: a service that is restarting,
# or whose subscription the server has not yet matched across accounts, answers a moment later.
# Safe for every call, edits included: "no responders" means no subscriber got the request.
NO_RESPONDERS_RETRY_S = 2.0


async def call(
    nc: NATS, subject: str, body: bytes, *, service: str, actor: str = "", timeout: float = 10.0
) -> bytes:
    """Send ``body`` to ``subject`` and return the reply body.

    Raises:
        ServiceUnavailable: ``service`` is not running or did not answer.
        ApiError: the error the service replied with.
    """
    # The deadline tells the service when this caller stops waiting: a change that reaches it
    # later (a paused or overloaded service) is refused rather than applied after the caller
    # was told "did not answer" (an operator told a rotation failed may roll it back).
    headers = {h.DEADLINE: Deadline.after(timeout).header()}
    if actor:
        headers[ACTOR] = actor
    loop = asyncio.get_running_loop()
    give_up = loop.time() + min(NO_RESPONDERS_RETRY_S, timeout)
    pause = 0.05
    while True:
        try:
            msg = await nc.request(subject, body, timeout=timeout, headers=headers)
            break
        except nats.errors.NoRespondersError:
            if loop.time() + pause > give_up:
                raise ServiceUnavailable(
                    f"the {service} service is not running (is the stack up?)",
                    code=f"{service}_down",
                ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.4)
        except nats.errors.TimeoutError:
            raise ServiceUnavailable(
                f"the {service} service did not answer", code=f"{service}_down"
            ) from None
    reply = decode_reply(msg.data, msg.headers)
    if reply.kind is ReplyKind.ERROR:
        raise error_from_reply(reply)
    return msg.data
