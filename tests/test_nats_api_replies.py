"""What the head answers on the NATS API itself: headers spelled in another case, and a
request whose every attempt failed; and how a dialect stream that failed midway ends.

On the session stack, as the internal client ``app``, reading the raw reply messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.support import bus_answer

pytestmark = pytest.mark.integration

FAILING = deployment_id("fake", "status:500")  # the session stack's `err500`


async def _replies(
    nc: NATS,
    subject: str,
    body: Mapping[str, object],
    headers: dict[str, str],
    *,
    accepted: bool = False,
) -> list[replies.Reply]:
    """Every message of one request's reply, in order, up to the terminator (keep-alives
    left out, and ``accepted`` unless asked for)."""
    inbox = nc.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=got.put)
    out: list[replies.Reply] = []
    try:
        await nc.publish(subject, msgspec.json.encode(body), reply=inbox, headers=headers)
        async with asyncio.timeout(30):
            while (msg := await got.get()).headers:  # the terminator has none
                reply = replies.decode_reply(msg.data, msg.headers)
                if reply.kind is replies.ReplyKind.KEEPALIVE:
                    continue
                if accepted or reply.kind is not replies.ReplyKind.ACCEPTED:
                    out.append(reply)
    finally:
        await sub.unsubscribe()
    return out


def _headers(stack: Stack) -> dict[str, str]:
    deadline = str(int((time.time() + 30) * 1000))
    return {"Authorization": f"Bearer {stack.api_key}", h.DEADLINE: deadline}


async def test_a_header_spelled_in_lowercase_is_refused_with_its_spelling(stack: Stack) -> None:
    """It was ignored: the request ran under an id of the head's making."""
    nc = await stack.connect("app")
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        reply = await bus_answer(nc, body, {**_headers(stack), "sy-request-id": "lower-1"})
    finally:
        await nc.close()
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 400)
    error = msgspec.json.decode(reply.body)["error"]
    assert error["param"] == "sy-request-id"
    assert error["code"] == "invalid_header"
    assert h.REQUEST_ID in error["message"]


@pytest.mark.parametrize(
    ("sent", "value"), [("sy-deadline", "1000000000000"), ("SY-PRIORITY", "zzz")]
)
async def test_a_header_in_another_case_is_refused_next_to_a_right_request_id(
    stack: Stack, sent: str, value: str
) -> None:
    """It was served on the default deadline and priority: the spelling was checked only when
    ``Sy-Request-Id`` was missing too."""
    nc = await stack.connect("app")
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        headers = {**_headers(stack), h.REQUEST_ID: f"right-id-{sent}", sent: value}
        reply = await bus_answer(nc, body, headers)
    finally:
        await nc.close()
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 400)
    error = msgspec.json.decode(reply.body)["error"]
    assert (error["param"], error["code"]) == (sent, "invalid_header")
    assert "case-sensitive" in error["message"]


async def test_all_deployments_failed_names_the_last_deployment_and_the_attempts(
    stack: Stack,
) -> None:
    """As a model-proxy's error and every answer do (``Sy-Deployment``, ``Sy-Attempts``)."""
    nc = await stack.connect("app")
    try:
        body = {"model": "err500", "messages": [{"role": "user", "content": "hi"}]}
        reply = await bus_answer(nc, body, _headers(stack))
    finally:
        await nc.close()
        # The next test of `err500` expects it to fail, not to be cooling down: ended, and a
        # moment for every head to follow (as tests/test_routing.py waits).
        await stack.admin("DELETE", f"/deployments/{FAILING}/cooldown")
        await asyncio.sleep(0.2)
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 502)
    assert msgspec.json.decode(reply.body)["error"]["code"] == "all_deployments_failed"
    assert (reply.deployment, reply.attempts) == (FAILING, 1)


async def test_a_key_without_bearer_is_refused_saying_how_to_send_it(stack: Stack) -> None:
    """As at the HTTP edges: a bare key in ``Authorization`` was accepted on the bus, although
    the contract (docs/nats-api.md) asks for ``Bearer <key>``."""
    nc = await stack.connect("app")
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    deadline = {h.DEADLINE: str(int((time.time() + 30) * 1000))}
    try:
        bare = await bus_answer(nc, body, {**deadline, "Authorization": stack.api_key})
        basic = await bus_answer(nc, body, {**deadline, "Authorization": "Basic dXNlcjpwYXNz"})
        sent = await bus_answer(nc, body, _headers(stack))
    finally:
        await nc.close()
    for reply, problem in (
        (bare, "sent in the Authorization header without the `Bearer ` scheme"),
        (basic, "uses the `Basic` scheme"),
    ):
        assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 401)
        error = msgspec.json.decode(reply.body)["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "missing_api_key")
        assert problem in error["message"]
        assert "`Authorization: Bearer sk-sy-...`" in error["message"]
        assert stack.api_key not in reply.body.decode()
    assert sent.kind is replies.ReplyKind.FINAL


async def test_a_dialect_stream_failing_midway_ends_in_an_error_on_the_bus(stack: Stack) -> None:
    """A Messages or Responses stream whose provider failed after content ended on the bus
    with ``Sy-Kind: final`` and ``Sy-Status: 200`` (the error only inside the last chunk, as
    the dialect's own event), while chat ended in ``error``: a bus client trusting the headers
    took a cut answer for a whole one. Now it ends in an ``error`` with the failure's status,
    marked ``Sy-Error-In-Stream`` (so a relay sends no second error event)."""
    prompt = [{"role": "user", "content": "x"}]
    cases: dict[str, tuple[dict[str, object], bytes]] = {
        subjects.MESSAGES: ({"max_tokens": 16, "messages": prompt}, b"event: error"),
        subjects.RESPONSES: ({"input": "x"}, b"event: response.failed"),
    }
    nc = await stack.connect("app")
    try:
        for n, (subject, (body, event)) in enumerate(cases.items()):
            # A deployment each: the first failure cools its deployment.
            alias, model = f"nar-midfail-{n}", f"midfail:{n}"
            route = {"deployments": [{"provider": "fake", "model": model}]}
            assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
            await asyncio.sleep(0.2)  # every head follows the new route
            request = {**body, "model": alias, "stream": True}
            got = await _replies(nc, subject, request, _headers(stack))
            await stack.admin("DELETE", f"/routes/{alias}")
            kinds = [r.kind for r in got]
            assert kinds[0] is replies.ReplyKind.CHUNK, (subject, kinds)
            assert kinds.count(replies.ReplyKind.ERROR) == 1, (subject, kinds)
            assert replies.ReplyKind.FINAL not in kinds, (subject, kinds)
            last = got[-1]
            assert (last.kind, last.status, last.in_stream) == (
                replies.ReplyKind.ERROR,
                502,
                True,
            ), subject
            assert last.deployment == deployment_id("fake", model)
            assert msgspec.json.decode(last.body)["error"]["message"], subject
            assert event in got[-2].body, (subject, got[-2].body)
            # As a stream's final does, it says how many chunks it follows: a reader missing
            # the last one (the error event) waits for its replay.
            chunks = [r for r in got if r.kind is replies.ReplyKind.CHUNK]
            assert last.seq == len(chunks), (subject, last.seq, len(chunks))
    finally:
        await nc.close()


async def test_the_request_id_comes_back_on_accepted_and_on_the_answer(stack: Stack) -> None:
    """A caller that sends no ``Sy-Request-Id`` (optional: the head makes one) never learnt
    the id, so it could neither cancel the request (the proof is over the id) nor send it
    again under it. ``accepted`` and the final or error message now name it; an id the caller
    sent comes back as sent."""
    # A provider that takes 1.5 s: ``accepted`` surely comes before the answer (a fast
    # answer can overtake it, and one after the terminator is dropped by the server).
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    nc = await stack.connect("app")
    try:
        made = await _replies(nc, subjects.CHAT, body, _headers(stack), accepted=True)
        streamed = {**body, "stream": True}
        own = {**_headers(stack), h.REQUEST_ID: "mine-1"}
        sent = await _replies(nc, subjects.CHAT, streamed, own, accepted=True)
        refused = await _replies(nc, subjects.CHAT, {**body, "model": "nope"}, _headers(stack))
        listed = await _replies(nc, subjects.MODELS, {}, own)
    finally:
        await nc.close()
    kinds = {r.kind for r in made}
    assert {replies.ReplyKind.ACCEPTED, replies.ReplyKind.FINAL} <= kinds, kinds
    ids = {r.request_id for r in made}
    assert len(ids) == 1, made
    assert ids.pop(), made  # one id, not empty, on accepted and on the final
    ends = [r for r in sent if r.kind is not replies.ReplyKind.CHUNK]
    assert {r.kind for r in ends} == {replies.ReplyKind.ACCEPTED, replies.ReplyKind.FINAL}
    assert {r.request_id for r in ends} == {"mine-1"}
    assert (refused[-1].kind, refused[-1].status) == (replies.ReplyKind.ERROR, 404)
    assert refused[-1].request_id  # the head's own answer names the id too
    assert (listed[-1].kind, listed[-1].request_id) == (replies.ReplyKind.FINAL, "mine-1")


async def test_authorization_spelled_in_lowercase_is_a_400_saying_how_to_spell_it(
    stack: Stack,
) -> None:
    """``authorization`` (as Node clients send it) was answered 401 "No client key was sent",
    which sent the caller looking for a key problem; a lowercase ``Sy-*`` header already got
    a 400 saying NATS header names are case-sensitive. Now ``authorization`` gets it too,
    with a ``Sy-Request-Id`` of its own or without one."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    deadline = {h.DEADLINE: str(int((time.time() + 30) * 1000))}
    lower = {**deadline, "authorization": f"Bearer {stack.api_key}"}
    nc = await stack.connect("app")
    try:
        named = await bus_answer(nc, body, {**lower, h.REQUEST_ID: "lower-auth-1"})
        unnamed = await bus_answer(nc, body, lower)
        listed = await _replies(nc, subjects.MODELS, {}, lower)
    finally:
        await nc.close()
    for reply in (named, unnamed, listed[-1]):
        assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 400), reply
        error = msgspec.json.decode(reply.body)["error"]
        assert (error["param"], error["code"]) == ("authorization", "invalid_header")
        assert "case-sensitive: spell it Authorization" in error["message"]
        assert stack.api_key not in reply.body.decode()


def _head_lines(stack: Stack, text: str) -> list[str]:
    """The lines of every head's log that hold ``text``."""
    found: list[str] = []
    for phase in stack.supervisor.procs:
        for proc in phase:
            if proc.spec.name.startswith("head"):
                log = proc.log_path.read_text(encoding="utf-8", errors="replace")
                found += [line for line in log.splitlines() if text in line]
    return found


async def test_answers_looping_back_through_the_import_are_dropped_with_one_line(
    stack: Stack,
) -> None:
    """An internal client that names ``llm.v1.chat`` as its reply subject gets every answer
    published there, in its account, whose import brings it back to a head as a message
    without a reply subject: each was logged as its own warning ("dropped a message on
    llm.v1.chat without a reply subject", two or three per request), saying nothing of the
    cause. Now one line every 10 s at most, naming the cause and the latest request."""
    heads = sum(
        proc.spec.name.startswith("head") for phase in stack.supervisor.procs for proc in phase
    )
    before = len(_head_lines(stack, "without a reply subject"))
    nc = await stack.connect("app")
    try:
        for n in range(3):
            headers = {**_headers(stack), h.REQUEST_ID: f"looped-{n}"}
            await nc.publish(subjects.MODELS, b"{}", reply=subjects.CHAT, headers=headers)
        await nc.flush()
        deadline = time.monotonic() + 10
        while not _head_lines(stack, "request looped-"):
            assert time.monotonic() < deadline, _head_lines(stack, "without a reply subject")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # the other answers arrive too
    finally:
        await nc.close()
    lines = _head_lines(stack, "without a reply subject")
    assert 1 <= len(lines) - before <= heads, lines  # one per head at most, not per message
    named = _head_lines(stack, "request looped-")
    assert "names an LLM API subject as its reply subject" in named[-1], named
    assert stack.api_key not in "".join(lines)
