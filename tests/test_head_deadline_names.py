"""A bus caller's 504 from the head says which limit set its deadline, on the session stack.

An HTTP edge's 504 ends "(the deadline was ...)", naming the client's header or the gateway's
setting; a caller on the bus (``llm.v1.chat`` with its key in ``Authorization``) got the bare
"the request deadline passed before it was routed". The head now names its own
``Sy-Deadline``, ``ingress.max_deadline_s`` capping it, or ``ingress.default_deadline_s``, and
stamps which on the request (``Sy-Deadline-By``) so that a reroute's 504 names it too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.support import bus_answer

pytestmark = pytest.mark.integration

SLOW = "slow:6000"
ROUTES = {"deadline-named": {"deployments": [{"provider": "fake", "model": SLOW}]}}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    async with stack.live_routes(ROUTES):
        await asyncio.sleep(1.0)  # every head follows the table on its own
        yield stack


def _chat(text: str) -> dict[str, object]:
    return {"model": "deadline-named", "messages": [{"role": "user", "content": text}]}


@pytest.mark.asyncio(loop_scope="session")
async def test_a_deadline_the_caller_set_is_named_as_its_own(routed: Stack) -> None:
    nc = await routed.connect("app")
    try:
        past = str(int((time.time() - 5) * 1000))
        auth = {"Authorization": f"Bearer {routed.api_key}", h.DEADLINE: past}
        reply = await bus_answer(nc, _chat("late"), auth)
    finally:
        await nc.close()
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 504), reply.body
    message = msgspec.json.decode(reply.body)["error"]["message"]
    assert message == (
        "the request deadline passed before it was routed "
        "(the deadline was the caller's own Sy-Deadline)"
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_a_reroutes_504_names_the_heads_default(routed: Stack) -> None:
    """A bus request sent without ``Sy-Deadline`` is queued stamped ``Sy-Deadline-By:
    default`` (read from its dispatch queue while the provider works on it); a reroute of it
    whose deadline passed (forged, to the reply subject a head saw for it) is answered 504
    naming ``ingress.default_deadline_s``."""
    seen: asyncio.Queue[str] = asyncio.Queue()
    request_id = f"deadline-named-{secrets.token_hex(4)}"

    async def spied(msg: Msg) -> None:
        if (msg.headers or {}).get(h.REQUEST_ID) == request_id:
            seen.put_nowait(msg.reply)

    spy, app = await routed.connect("head"), await routed.connect("app")
    proxy, prov = await routed.connect("modelproxy"), await routed.connect("provisioner")
    try:
        await spy.subscribe(subjects.CHAT, cb=spied)
        await spy.flush()
        body = msgspec.json.encode(_chat(request_id))
        answers: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = app.new_inbox()
        await app.subscribe(inbox, cb=answers.put)
        auth = {"Authorization": f"Bearer {routed.api_key}", h.REQUEST_ID: request_id}
        await app.publish(subjects.CHAT, body, reply=inbox, headers=auth)
        reply_to = await asyncio.wait_for(seen.get(), 5)
        queued = await _queued_headers(prov, deployment_id("fake", SLOW), request_id)
        assert queued.get(h.DEADLINE_BY) == "default", queued
        forged = {
            h.REQUEST_ID: request_id,
            h.REPLY: reply_to,
            h.OP: "chat",
            h.ALIAS: "deadline-named",
            h.TRIED: deployment_id("fake", SLOW),
            h.ERRORS: f"{deployment_id('fake', SLOW)}: 500 boom",
            h.LAST_STATUS: "502",
            h.DEADLINE: str(int((time.time() - 1) * 1000)),
            h.DEADLINE_BY: queued[h.DEADLINE_BY],
        }
        await proxy.request(subjects.REROUTE, body, timeout=5, headers=forged)  # confirmed
        async with asyncio.timeout(5):
            while True:
                got = replies.decode_reply((msg := await answers.get()).data, msg.headers)
                if got.kind in (replies.ReplyKind.FINAL, replies.ReplyKind.ERROR):
                    break
    finally:
        for nc in (spy, app, proxy, prov):
            await nc.close()
    assert (got.kind, got.status) == (replies.ReplyKind.ERROR, 504), got.body
    message = msgspec.json.decode(got.body)["error"]["message"]
    default = routed.settings.ingress.default_deadline_s
    assert message.startswith("the request deadline passed before it was routed (the deadline")
    assert f"ingress.default_deadline_s ({default:g} s)" in message, message
    assert "set no Sy-Deadline" in message


async def _queued_headers(nc: NATS, deployment: str, request_id: str) -> dict[str, str]:
    """The headers of ``request_id``'s message in ``deployment``'s dispatch queue (it stays
    there while the provider works on it), waited for up to 5 s."""
    js = nc.jetstream(timeout=5)
    subject = subjects.dispatch(deployment)
    async with asyncio.timeout(5):
        while True:
            try:
                raw = await js.get_last_msg(subjects.DISPATCH_STREAM, subject)
            except NotFoundError:  # not stored yet
                raw = None
            if raw is not None and (raw.headers or {}).get(h.REQUEST_ID) == request_id:
                return dict(raw.headers or {})
            await asyncio.sleep(0.05)
