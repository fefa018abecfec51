"""A cancel that cancels nothing is answered, counted and logged, never silently ignored.

A cancel with ``Sy-Deadline`` in seconds, or ``sy-cancel-proof`` lowercased (as Node clients
send it), changed nothing, with no log, no metric and no reply: the caller thought its request
cancelled while it ran on. On the session stack, as the internal client ``app``.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.runtime import semconv as sc
from switchyard.schemas.keys import hash_key
from tests.stacks import Stack

pytestmark = pytest.mark.integration


def _modelproxy_log(stack: Stack) -> str:
    return "".join(
        proc.log_path.read_text(encoding="utf-8", errors="replace")
        for phase in stack.supervisor.procs
        for proc in phase
        if proc.spec.name.startswith("modelproxy")
    )


async def test_a_cancel_that_cancels_nothing_is_answered_counted_and_logged(
    stack: Stack,
) -> None:
    request_id = f"bad-cancel-{time.time_ns()}"
    proof = cancel_proof(hash_key(stack.api_key), request_id)
    before = await stack.modelproxy_total(sc.CANCELS_REFUSED, reason="invalid_header")
    nc = await stack.connect("app")
    got: asyncio.Queue[Msg] = asyncio.Queue()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=got.put)
    try:
        seconds = str(int(time.time()) + 60)  # unix seconds, not milliseconds
        headers = {h.REQUEST_ID: request_id, h.CANCEL_PROOF: proof, h.DEADLINE: seconds}
        await nc.publish(subjects.CANCEL, b"", reply=inbox, headers=headers)
        async with asyncio.timeout(10):
            msg = await got.get()
        reply = replies.decode_reply(msg.data, msg.headers)
        assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 400)
        error = msgspec.json.decode(reply.body)["error"]
        assert (error["code"], error["param"]) == ("invalid_header", h.DEADLINE)
        assert "can only be seconds" in error["message"]
        # Without a reply subject (lowercased, as Node sends it): counted all the same.
        lowered = {h.REQUEST_ID: request_id, "sy-cancel-proof": proof}
        await nc.publish(subjects.CANCEL, b"", headers=lowered)
        await nc.flush()
        deadline = time.monotonic() + 10
        while await stack.modelproxy_total(sc.CANCELS_REFUSED, reason="invalid_header") < (
            before + 2
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    finally:
        await sub.unsubscribe()
        await nc.close()
    log = _modelproxy_log(stack)
    assert "cancelled nothing" in log
    assert proof not in log


async def test_two_model_proxies_count_and_answer_a_cancel_that_cancels_nothing_once(
    stack: Stack,
) -> None:
    """Every model-proxy hears every cancel; each used to count, log and answer one that
    cancels nothing, so with the stack's two model-proxies one bad cancel read 2 in
    switchyard_cancels_refused_total and got two 400s. One model-proxy of a queue group does."""
    proxies = [
        proc
        for phase in stack.supervisor.procs
        for proc in phase
        if proc.spec.name.startswith("modelproxy") and proc.pid is not None
    ]
    assert len(proxies) == 2, [p.spec.name for p in proxies]
    before = await stack.modelproxy_total(sc.CANCELS_REFUSED, reason="no_request_id")
    nc = await stack.connect("app")
    got: asyncio.Queue[Msg] = asyncio.Queue()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=got.put)
    sent = 3
    try:
        proof = cancel_proof(hash_key(stack.api_key), "any")
        for _ in range(sent):  # no Sy-Request-Id: no_request_id
            await nc.publish(subjects.CANCEL, b"", reply=inbox, headers={h.CANCEL_PROOF: proof})
        await nc.flush()
        deadline = time.monotonic() + 10
        while await stack.modelproxy_total(sc.CANCELS_REFUSED, reason="no_request_id") < (
            before + sent
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # room for a second model-proxy's count and answers
        after = await stack.modelproxy_total(sc.CANCELS_REFUSED, reason="no_request_id")
        errors = []
        while not got.empty():
            msg = got.get_nowait()
            if msg.data or msg.headers:  # not the empty terminator
                errors.append(replies.decode_reply(msg.data, msg.headers))
    finally:
        await sub.unsubscribe()
        await nc.close()
    assert after == before + sent
    assert [(e.kind, e.status) for e in errors] == [(replies.ReplyKind.ERROR, 400)] * sent
