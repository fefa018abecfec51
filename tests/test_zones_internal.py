"""Internal clients' own account (INTERNAL) on a real nats-server running the rendered config.

nats-server checks the subject a client publishes to against its permissions, but not the reply
subject it names, and delivers a service's answer to that subject in the requester's account.
These tests aim the answer at CLIENT's streams and buckets from an internal client, and show
what an unrestricted INTERNAL user can reach. The zone server is ``tests/test_zones.py``'s.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from switchyard.bus.connect import subscribed
from tests.test_zones import (  # noqa: F401  (zone: the fixture, one per module)
    AUDIT,
    CONTROL_ADMIN,
    DISPATCH,
    SECRET_ADMIN,
    SECRET_GET,
    Zone,
    _as,
    _exported_request,
    zone,
)

pytestmark = pytest.mark.integration


# ---- reply subjects: where an internal client's answers are delivered ----

# (stream, reply subject an internal client names, who may append to the stream)
REPLY_TARGETS = [
    ("AUDIT", "audit.v1.key.create", "admin"),
    ("KV_sy_keys", "$KV.sy_keys.k.victim", "admin"),
    ("KV_sy_batches", "$KV.sy_batches.b.victim", "batch"),
]
SENTINELS = {
    "AUDIT": "audit.v1.test.sentinel",
    "KV_sy_keys": "$KV.sy_keys.k.sentinel",
    "KV_sy_batches": "$KV.sy_batches.b.sentinel",
}


async def _append_sentinel(server: Zone, stream: str, writer: str) -> int:
    """Append one message to ``stream`` as an identity that may; returns its sequence."""
    nc, _ = await _as(server, writer)
    try:
        ack = await nc.jetstream().publish(SENTINELS[stream], b"sentinel", stream=stream)
        return ack.seq
    finally:
        await nc.close()


@pytest.mark.parametrize(("stream", "reply", "writer"), REPLY_TARGETS)
async def test_internal_client_replies_never_reach_client_streams(
    zone: Zone,  # noqa: F811  (the fixture)
    stream: str,
    reply: str,
    writer: str,
) -> None:
    """nats-server does not check a reply subject against the sender's publish permissions,
    and delivers a service's answer in the requester's account. An internal client naming a
    CLIENT stream's subject as its reply gets the head's answer delivered in INTERNAL (a probe
    there sees it), and nothing is stored in the stream."""
    inprobe, _ = await _as(zone, "inprobe")
    admin, _ = await _as(zone, "admin")
    head, _ = await _as(zone, "head")
    app, _ = await _as(zone, "app")
    landed: asyncio.Queue[Msg] = asyncio.Queue()

    async def answer(msg: Msg) -> None:  # what the head does: answer the reply subject
        await head.publish(msg.reply, b'{"error": {"message": "junk"}}')

    try:
        before = (await admin.jetstream().stream_info(stream)).state.last_seq
        # subscribed(), not flush(): nats-py's flush can return before the server has a SUB
        # just made (CI once timed out here waiting for the answer that found nobody).
        await inprobe.subscribe(reply, cb=landed.put)
        await subscribed(inprobe)
        await head.subscribe("llm.v1.chat", queue="head", cb=answer)
        await subscribed(head)
        await app.publish("llm.v1.chat", b"{}", reply=reply)
        await app.flush()
        got = await asyncio.wait_for(landed.get(), 5)
        assert got.data == b'{"error": {"message": "junk"}}'
        # The server routed the answer before the probe got it, and JetStream stores a
        # stream's messages in arrival order: had the answer reached the stream, the sentinel
        # written now would not come right after ``before``.
        assert await _append_sentinel(zone, stream, writer) == before + 1
    finally:
        for nc in (admin, head, app, inprobe):
            await nc.close()


async def test_internal_zone_reaches_nothing_but_the_llm_api(zone: Zone) -> None:  # noqa: F811
    """Even an INTERNAL user without permission limits: no JetStream (so no stream or bucket
    to write to), no admin services, no CLIENT or CORE subject; the LLM API does answer."""
    inprobe, _ = await _as(zone, "inprobe")
    secrets_nc, _ = await _as(zone, "secrets")
    control, _ = await _as(zone, "control")
    head, _ = await _as(zone, "head")
    got: list[str] = []

    async def answer(msg: Msg) -> None:
        got.append(msg.subject)
        await msg.respond(b"reached")

    for nc, subject in (
        (secrets_nc, "secrets.v1.>"),
        (control, "control.v1.admin.>"),
        (head, "llm.v1.chat"),
    ):
        await nc.subscribe(subject, cb=answer)
        await subscribed(nc)
    try:
        assert (await _exported_request(inprobe, "llm.v1.chat", b"{}")).data == b"reached"
        for subject in (
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.INFO.AUDIT",
            "$JS.API.STREAM.INFO.KV_sy_keys",
        ):
            reply = json.loads((await inprobe.request(subject, b"{}", timeout=2)).data)
            assert reply["error"]["err_code"] == 10039, reply  # JetStream not enabled
        for subject in (
            "$JS.API.DIRECT.GET.KV_sy_keys.$KV.sy_keys.k.x",  # streams answer these themselves
            SECRET_GET,
            SECRET_ADMIN,
            CONTROL_ADMIN,
            DISPATCH,
            AUDIT,
        ):
            with pytest.raises((NoRespondersError, NatsTimeout)):
                await inprobe.request(subject, b"{}", timeout=0.5)
        assert got == ["llm.v1.chat"]
    finally:
        for nc in (inprobe, secrets_nc, control, head):
            await nc.close()
