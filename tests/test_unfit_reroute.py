"""A route mixing deployments answers a request by what it asks, not by the weights' pick.

On the session stack (real NATS, heads and model-proxies), with this module's providers and
routes (removed at the end): the fake Anthropic over HTTP, served through litellm, which has no
place for ``top_k`` or JSON mode, and the fake OpenAI-compatible server, which takes both. A
route weighting Anthropic 1,000,000 to 1 answers ``top_k`` 200 from the OpenAI-compatible
deployment, streamed or not, with one provider call and one usage event; a route of two
Anthropic deployments answers 400 naming the field and both deployments, having called no
provider; a client's own malformed value is answered 400 at once, not tried everywhere.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.bus.envelope import MAX_TRIED
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import deployment_id
from tests.fakes.anthropic import FakeAnthropic
from tests.stacks import Stack
from tests.support import bus_answer, usage_events
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLAUDE = {"provider": "unfit-anthropic", "model": "ok", "weight": 1_000_000}
COMPAT = {"provider": "unfit-compat", "model": "echo", "weight": 1}
ROUTES: dict[str, dict[str, Any]] = {
    "unfit-mixed": {"deployments": [CLAUDE, COMPAT]},
    "unfit-claude": {
        "deployments": [CLAUDE, {"provider": "unfit-anthropic", "model": "claude-sonnet-4-5"}]
    },
}
# More deployments that refuse `top_k` than a head reads in Sy-Tried (one fake provider).
MANY = [{"provider": "unfit-anthropic", "model": f"many-{n:02d}"} for n in range(MAX_TRIED + 1)]
CLAUDE_ID = "unfit-anthropic--ok"
COMPAT_ID = "unfit-compat--echo"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(
    stack: Stack, upstream: FakeOpenAI, claude_fake: tuple[FakeAnthropic, str]
) -> AsyncIterator[Stack]:
    providers = {
        "unfit-anthropic": {
            "kind": "anthropic",
            "api_base": claude_fake[1],
            "secret": "unfit-anthropic",
        },
        "unfit-compat": {"kind": "openai-compatible", "api_base": upstream.base_url},
    }
    async with stack.live_routes(ROUTES, providers, {"unfit-anthropic": "sk-ant-unfit"}):
        for n in range(4):  # each model-proxy imports litellm on its first call: seconds
            # (Up to 90 s each: on a loaded machine an import took more than 30.)
            warm = await _post(stack, _chat("unfit-mixed", "warm"), f"unfit-warm-{n}", wait=90)
            assert warm.status_code == 200, warm.text
            assert warm.headers["x-switchyard-deployment"] == CLAUDE_ID
        yield stack


async def _post(
    stack: Stack, body: dict[str, Any], request_id: str, wait: float | None = None
) -> httpx.Response:
    """One request; re-sent while the heads have not seen this module's routes yet (404).
    ``wait``: its deadline, less 5 s (a 504 then, before the client gives up)."""
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": request_id}
    if wait is not None:
        headers["X-Request-Timeout"] = f"{wait - 5:g}"
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=wait or 30) as http:
        while True:
            resp = await http.post("/v1/chat/completions", json=body, headers=headers)
            if resp.status_code != 404 or time.monotonic() > deadline:
                return resp
            await asyncio.sleep(0.2)


def _chat(alias: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"model": alias, "messages": [{"role": "user", "content": text}], **fields}


def _calls_with(fake: Any, text: str) -> int:
    return sum(text in str(call.body) for call in fake.calls)


async def _billed(stack: Stack, request_id: str) -> list[UsageEvent]:
    """Every usage event of ``request_id`` once its first is stored (a second would follow
    within milliseconds: both attempts' model-proxies publish before they acknowledge)."""
    assert await stack.usage_of(request_id) is not None, "the answer was not billed"
    await asyncio.sleep(1.0)
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
        found = []
        for seq in range(last, max(0, last - 200), -1):
            raw = await js.get_msg(subjects.USAGE_STREAM, seq)
            found += [
                e for e in usage_events(raw.data) if e.request_id.split(".", 1)[0] == request_id
            ]
        return found
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_top_k_goes_to_the_deployment_that_takes_it_whatever_the_weights(
    routed: Stack, upstream: FakeOpenAI, claude_fake: tuple[FakeAnthropic, str], stream: bool
) -> None:
    """Anthropic through litellm has no place for `top_k`: that was a 400 whenever the weights
    picked it (here: nearly always). Now the OpenAI-compatible deployment answers, once."""
    marker = f"topk-{secrets.token_hex(4)}"
    request_id = f"unfit-{marker}"
    resp = await _post(routed, _chat("unfit-mixed", marker, top_k=5, stream=stream), request_id)
    assert resp.status_code == 200, resp.text
    # (Absent from a stream that started before its first chunk: a machine so loaded that
    # the reroute took ingress.stream_start_s. The calls below say who answered all the same.)
    if not stream or "x-switchyard-deployment" in resp.headers:
        assert resp.headers["x-switchyard-deployment"] == COMPAT_ID
        # One provider call: the refusal is no attempt (it said 2).
        assert resp.headers["x-switchyard-attempts"] == "1"
    assert marker in resp.text
    assert _calls_with(claude_fake[0], marker) == 0  # refused before anything was sent
    assert _calls_with(upstream, marker) == 1  # one provider call
    events = await _billed(routed, request_id)
    assert [(e.deployment, e.status) for e in events] == [(COMPAT_ID, 200)]


@pytest.mark.asyncio(loop_scope="session")
async def test_json_mode_goes_to_the_deployment_that_has_it(
    routed: Stack, upstream: FakeOpenAI, claude_fake: tuple[FakeAnthropic, str]
) -> None:
    marker = f"json-{secrets.token_hex(4)}"
    body = _chat("unfit-mixed", marker, response_format={"type": "json_object"})
    resp = await _post(routed, body, f"unfit-{marker}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-switchyard-deployment"] == COMPAT_ID
    assert _calls_with(claude_fake[0], marker) == 0
    assert _calls_with(upstream, marker) == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_a_plain_request_still_goes_by_the_weights(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    marker = f"plain-{secrets.token_hex(4)}"
    resp = await _post(routed, _chat("unfit-mixed", marker), f"unfit-{marker}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-switchyard-deployment"] == CLAUDE_ID
    assert resp.headers["x-switchyard-attempts"] == "1"
    assert _calls_with(upstream, marker) == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_when_no_deployment_takes_the_field_the_client_gets_a_clear_400(
    routed: Stack, claude_fake: tuple[FakeAnthropic, str]
) -> None:
    marker = f"none-{secrets.token_hex(4)}"
    request_id = f"unfit-{marker}"
    resp = await _post(routed, _chat("unfit-claude", marker, top_k=5), request_id)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "unsupported_parameter",
        "top_k",
    )
    message = error["message"]
    assert "no deployment of `unfit-claude` can take this request" in message
    assert CLAUDE_ID in message
    assert "unfit-anthropic--claude-sonnet-4-5" in message
    assert "`top_k`" in message
    assert "127.0.0.1" not in message
    assert "http" not in message
    assert resp.headers["x-switchyard-attempts"] == "1"  # no provider call (it said 2)
    assert _calls_with(claude_fake[0], marker) == 0
    assert await routed.usage_of(request_id) is None  # nothing billed


@pytest.mark.asyncio(loop_scope="session")
async def test_a_clients_own_error_is_answered_at_once_not_tried_everywhere(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    """A malformed `tool_choice` is the client's whatever the provider: the deployment the
    weights picked answers its 400, and the other is never called."""
    marker = f"bad-{secrets.token_hex(4)}"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = _chat("unfit-mixed", marker, tools=tools, tool_choice="bogus")
    resp = await _post(routed, body, f"unfit-{marker}")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "tool_choice"
    assert resp.headers["x-switchyard-deployment"] == CLAUDE_ID
    assert _calls_with(upstream, marker) == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_a_request_refused_by_more_deployments_than_sy_tried_holds_gets_its_400(
    routed: Stack, claude_fake: tuple[FakeAnthropic, str]
) -> None:
    """Refusals count toward no `routing.max_attempts`, so a route of 33 deployments that
    refuse a field rerouted the request 33 times: the 33rd reroute's Sy-Tried was past what
    a head reads, which dropped it, and the client waited for its deadline. The model-proxy
    that would list one deployment too many answers the 400 naming the refusals itself."""
    marker = f"many-{secrets.token_hex(4)}"
    request_id = f"unfit-{marker}"
    async with routed.live_routes({"unfit-many": {"deployments": MANY}}):
        # (A first call of so many deployments waits for their queues' consumers.)
        resp = await _post(routed, _chat("unfit-many", marker, top_k=5), request_id, wait=90)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "top_k")
    assert "no deployment of `unfit-many` can take this request" in error["message"]
    assert f"at most {MAX_TRIED + 1} deployments" in error["message"]
    assert resp.headers["x-switchyard-attempts"] == "1"  # refusals are no attempts
    assert _calls_with(claude_fake[0], marker) == 0
    assert await routed.usage_of(request_id) is None


async def _bus(stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> replies.Reply:
    """The final or error message of one request on ``llm.v1.chat``, sent as an internal
    client sends it (its key in ``Authorization``), once the heads know the route."""
    nc = await stack.connect("app")
    try:
        headers = {"Authorization": f"Bearer {stack.api_key}", **headers}
        deadline = time.monotonic() + 30
        while True:
            reply = await bus_answer(nc, body, headers)
            if reply.status != 404 or time.monotonic() > deadline:
                return reply
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_callers_sy_tried_and_sy_unfit_are_not_believed(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    """A caller on the bus could name deployments as tried (so they are never offered the
    request) or as refusals (so their real failures count toward no `routing.max_attempts`
    and cool nothing). The head clears both: the deployments named are still tried, and the
    attempts still end at `routing.max_attempts`."""
    marker = f"forged-{secrets.token_hex(4)}"
    forged = {h.TRIED: COMPAT_ID, h.UNFIT: COMPAT_ID}
    reply = await _bus(routed, _chat("unfit-mixed", marker, top_k=5), forged)
    assert (reply.kind, reply.status, reply.deployment) == (
        replies.ReplyKind.FINAL,
        200,
        COMPAT_ID,
    ), reply.body
    assert _calls_with(upstream, marker) == 1

    most = routed.settings.routing.max_attempts
    providers = {
        f"unfit-fail-{n}": {"kind": "openai-compatible", "api_base": upstream.base_url}
        for n in range(most + 1)
    }
    failing = [{"provider": name, "model": "status:500"} for name in providers]
    ids = ",".join(deployment_id(name, "status:500") for name in providers)
    async with routed.live_routes({"unfit-failing": {"deployments": failing}}, providers):
        marker = f"forged-{secrets.token_hex(4)}"
        reply = await _bus(routed, _chat("unfit-failing", marker), {h.UNFIT: ids})
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 502), reply.body
    assert reply.attempts == most
    assert _calls_with(upstream, marker) == most


@pytest.mark.asyncio(loop_scope="session")
async def test_a_head_answers_the_caller_of_a_reroute_it_cannot_read(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    """A head confirms a reroute's receipt before reading its headers: one it could not read
    (a Sy-Tried past MAX_TRIED, from a model-proxy of another version) was dropped, and its
    caller waited for its deadline. Its caller is answered now, with an OpenAI-shaped 500.

    The reroute is sent by hand, to the reply subject a head saw for a real request (read by
    a second, non-queue subscriber on the head's subject) while that request is still served
    (8 s): the caller's first answer is the head's error, not the provider's 200."""
    seen: asyncio.Queue[str] = asyncio.Queue()
    request_id = f"unfit-unread-{secrets.token_hex(4)}"

    async def spied(msg: Msg) -> None:
        if (msg.headers or {}).get(h.REQUEST_ID) == request_id:
            seen.put_nowait(msg.reply)

    slow = {"unfit-slow": {"deployments": [{"provider": "unfit-compat", "model": "slow:8000"}]}}
    spy, app = await routed.connect("head"), await routed.connect("app")
    proxy = await routed.connect("modelproxy")
    try:
        await spy.subscribe(subjects.CHAT, cb=spied)
        async with routed.live_routes(slow):
            await asyncio.sleep(1.0)  # the heads' route table
            body = msgspec.json.encode(_chat("unfit-slow", request_id))
            answers: asyncio.Queue[Msg] = asyncio.Queue()
            inbox = app.new_inbox()
            await app.subscribe(inbox, cb=answers.put)
            auth = {"Authorization": f"Bearer {routed.api_key}", h.REQUEST_ID: request_id}
            await app.publish(subjects.CHAT, body, reply=inbox, headers=auth)
            reply_to = await asyncio.wait_for(seen.get(), 5)
            too_many = ",".join(f"gone--m{n}" for n in range(MAX_TRIED + 1))
            forged = {h.REQUEST_ID: request_id, h.REPLY: reply_to, h.TRIED: too_many}
            await proxy.request(subjects.REROUTE, body, timeout=5, headers=forged)  # confirmed
            async with asyncio.timeout(6):
                while True:
                    got = replies.decode_reply((msg := await answers.get()).data, msg.headers)
                    if got.kind in (replies.ReplyKind.FINAL, replies.ReplyKind.ERROR):
                        break
    finally:
        for nc in (spy, app, proxy):
            await nc.close()
    assert (got.kind, got.status) == (replies.ReplyKind.ERROR, 500), got.body
    error = msgspec.json.decode(got.body)["error"]
    assert "a retry could not be read" in error["message"]
    assert h.TRIED in error["message"]
    assert got.request_id == request_id
