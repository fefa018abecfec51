"""Fast, clear refusals: no head running (503 at once) and a full deployment queue (503 at once).

Its own stack: a queue limit of 2 per deployment and a provider that takes 3 s with concurrency 1,
and no head until the test starts one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import msgspec
import openai
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.bus.envelope import MAX_TRIED
from switchyard.client import LLMClient
from switchyard.errors import ProviderError
from switchyard.runtime.definitions import ROUTE_TABLE_KEY, sync_dispatch_consumers
from switchyard.schemas.routing import Deployment, Route, deployment_id
from switchyard.stack import local
from switchyard.stack.process import ManagedProcess
from tests.stacks import Stack, start_stack
from tests.support import flushed
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def narrow(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 1}
        },
        "routes": {
            "slow": {"deployments": [{"provider": "fake", "model": "slow:3000"}]},
            # The same deployment, with a fallback that has room.
            "spill": {
                "deployments": [{"provider": "fake", "model": "slow:3000"}],
                "fallbacks": ["quick"],
            },
            "quick": {"deployments": [{"provider": "fake", "model": "quick"}]},
            # As spill, to one that holds its role a while (its model-proxy says it began).
            "spill-late": {
                "deployments": [{"provider": "fake", "model": "slow:3000"}],
                "fallbacks": ["late"],
            },
            "late": {"deployments": [{"provider": "fake", "model": "rolelate:700"}]},
        },
        "streams": {"dispatch_queue_limit": 2},
        "stack": {"heads": 1, "modelproxies": 1},
    }
    stack = await start_stack(
        tmp_path_factory.mktemp("narrow"),
        extra,
        components=["tail", "modelproxy"],
        wait_ready=False,
    )
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _start_head(stack: Stack) -> ManagedProcess:
    env = local.child_env(stack.settings, stack.config_file, {})
    step = local.components(stack.settings, env, [local.ComponentSpec("head")])[0]
    proc = ManagedProcess(step.spec, stack.home.logs)
    await proc.start()
    assert await proc.wait_healthy(30), proc.tail_log()
    return proc


async def test_no_head_is_503_at_once(narrow: Stack) -> None:
    async with openai.AsyncOpenAI(
        base_url=narrow.tail_url + "/v1", api_key=narrow.api_key, max_retries=0
    ) as client:
        began = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        took = time.perf_counter() - began
    assert info.value.status_code == 503
    assert info.value.code == "no_workers"
    assert info.value.response.headers["retry-after"] == "2"  # a head restarts in seconds
    # "At once": far below the 10 s a lost request waits before it is re-sent (not a speed
    # test; the benchmark measures speed).
    assert took < 2.0, f"took {took * 1000:.0f} ms"


async def _fill_the_queue(
    stack: Stack, http: httpx.AsyncClient, upstream: FakeOpenAI
) -> tuple[str, dict[str, str], list[asyncio.Task[httpx.Response]]]:
    """Two requests fill the queue of the slow deployment: one in flight, one waiting.

    Returns once both are seen there (the provider has the first, the queue holds both): a
    fixed wait let a loaded machine send the next request before the queue was full."""
    url = f"{stack.tail_url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    model = "slow:3000"
    subject = subjects.dispatch(deployment_id("fake", model))
    called = len(upstream.calls_for(model))
    first = [asyncio.create_task(http.post(url, json=BODY, headers=auth)) for _ in range(2)]
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 15
        while True:
            info = await js.stream_info(subjects.DISPATCH_STREAM, subjects_filter=subject)
            queued = (info.state.subjects or {}).get(subject, 0)
            if queued == 2 and len(upstream.calls_for(model)) > called:
                return url, auth, first
            assert time.monotonic() < deadline, f"{queued} queued"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def test_full_queue_is_refused_at_once(narrow: Stack, upstream: FakeOpenAI) -> None:
    head = await _start_head(narrow)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            url, auth, first = await _fill_the_queue(narrow, http, upstream)
            began = time.perf_counter()
            refused = await http.post(url, json=BODY, headers=auth)
            took = time.perf_counter() - began
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "queue_full"
            assert "slow" in error["message"]
            # The queue (2 at concurrency 1, no measured pace: 1 s each) drains in 2 s.
            assert refused.headers["retry-after"] in ("1", "2")
            assert took < 2.0  # refused by the queue, not after the 3 s provider call
            done = await asyncio.gather(*first)
        assert [r.status_code for r in done] == [200, 200]  # queued work is not lost
    finally:
        await head.stop(5)


async def test_a_full_queue_passes_the_request_to_the_routes_fallback(
    narrow: Stack, upstream: FakeOpenAI
) -> None:
    """A full deployment queue is a tried deployment: the route's fallback takes the request
    (docs/operations.md, the queue-near-limit runbook), and only when nothing else can does
    the caller get ``queue_full``."""
    head = await _start_head(narrow)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            url, auth, first = await _fill_the_queue(narrow, http, upstream)
            spilled = await http.post(url, json={**BODY, "model": "spill"}, headers=auth)
            assert spilled.status_code == 200, spilled.text
            assert spilled.headers["x-switchyard-deployment"] == deployment_id("fake", "quick")
            assert spilled.headers["x-switchyard-attempts"] == "2"
            # The full one is not cooled: once it has room, it serves the route again.
            assert [r.status_code for r in await asyncio.gather(*first)] == [200, 200]
            again = await http.post(url, json={**BODY, "model": "spill"}, headers=auth)
            assert again.status_code == 200, again.text
            assert again.headers["x-switchyard-deployment"] == deployment_id("fake", "slow:3000")
    finally:
        await head.stop(5)


async def test_a_request_a_full_queue_passed_on_is_accepted_as_the_placement_it_is(
    narrow: Stack, upstream: FakeOpenAI
) -> None:
    """The slow deployment's queue is full, its fallback takes the request: the head's
    ``accepted`` names the placement the fallback's model-proxy serves (2, as its keep-alives
    say). It said 1: the fallback's first keep-alive then read as a move, which cleared the
    deployment a 504 names, and told the batch runner the line was back in a queue."""
    head = await _start_head(narrow)
    nc = await narrow.connect("app")
    seen: list[tuple[str, str, str]] = []  # kind, placement, begun
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            _, _, first = await _fill_the_queue(narrow, http, upstream)
            inbox = nc.new_inbox()
            got: asyncio.Queue[Msg] = asyncio.Queue()
            sub = await nc.subscribe(inbox, cb=got.put)
            body = {**BODY, "model": "spill-late", "stream": True}
            deadline = str(int((time.time() + 30) * 1000))
            auth = {"Authorization": f"Bearer {narrow.api_key}", h.DEADLINE: deadline}
            await nc.publish(subjects.CHAT, msgspec.json.encode(body), reply=inbox, headers=auth)
            async with asyncio.timeout(20):
                while (msg := await got.get()).headers:  # the terminator has none
                    hdrs = msg.headers or {}
                    kind = hdrs.get(h.KIND, "")
                    if kind in ("accepted", "keepalive"):
                        seen.append((kind, hdrs.get(h.PLACEMENT, ""), hdrs.get(h.BEGUN, "")))
            await sub.unsubscribe()
            assert [r.status_code for r in await asyncio.gather(*first)] == [200, 200]
    finally:
        await nc.close()
        await head.stop(5)
    assert ("accepted", "2", "") in seen, seen
    assert ("keepalive", "2", "1") in seen, seen  # the fallback's provider began
    assert {placement for _, placement, _ in seen} == {"2"}, seen


async def test_a_retry_no_head_takes_is_answered_not_lost(narrow: Stack) -> None:
    """A failure worth a retry while no head runs: the caller gets that failure from the
    model-proxy instead of silence until its deadline."""
    table = narrow.settings.route_table
    broken = Route(deployments=(Deployment(provider="fake", model="status:500"),))
    table = msgspec.structs.replace(table, routes={**table.routes, "broken": broken})
    dep = deployment_id("fake", "status:500")
    prov = await narrow.connect("provisioner")
    head = await narrow.connect("head")  # enqueues like a head, but takes no reroutes
    app = await narrow.connect("app")
    try:
        js = prov.jetstream(timeout=10)
        await sync_dispatch_consumers(js, narrow.settings, table)  # as the control service does
        await (await js.key_value(subjects.ROUTES_BUCKET)).put(
            ROUTE_TABLE_KEY, msgspec.json.encode(table)
        )

        async def enqueue(msg: Msg) -> None:
            out = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
            out |= {h.REPLY: msg.reply, h.OP: "chat", h.ALIAS: "broken"}
            await head.jetstream().publish(subjects.dispatch(dep), msg.data, headers=out)
            await replies.send_accepted(head, msg.reply)

        await head.subscribe(subjects.CHAT, cb=enqueue)
        await flushed(head)
        body = msgspec.json.encode({**BODY, "model": "broken"})
        deadline = str(int((time.time() + 30) * 1000))
        async with LLMClient(app, api_key=narrow.api_key) as llm:
            with pytest.raises(ProviderError) as info:
                await llm.request(subjects.CHAT, body, {h.DEADLINE: deadline})
        assert info.value.status == 502
    finally:
        for nc in (app, head, prov):
            await nc.close()


async def test_a_reroute_whose_sy_tried_fills_on_a_full_queue_is_answered_by_the_head(
    narrow: Stack, upstream: FakeOpenAI
) -> None:
    """A reroute naming 32 deployments tried (refusals, forged here), whose next pick's queue
    is full: the head placed it on the route's fallback with 33 in Sy-Tried, which the
    model-proxy dropped as malformed, and the caller waited for its deadline. The head answers
    it now: the full queue's 503, "tried no further".

    The reroute goes to the reply subject a head saw for a real request to the slow
    deployment (read by a second, non-queue subscriber), queued first (3 s at the provider):
    the caller's first answer is the head's error, not that request's 200."""
    head = await _start_head(narrow)
    seen: asyncio.Queue[str] = asyncio.Queue()
    request_id = f"tried-full-{uuid.uuid4().hex[:8]}"

    async def spied(msg: Msg) -> None:
        if (msg.headers or {}).get(h.REQUEST_ID) == request_id:
            seen.put_nowait(msg.reply)

    spy, app, proxy = [await narrow.connect(n) for n in ("head", "app", "modelproxy")]
    try:
        await spy.subscribe(subjects.CHAT, cb=spied)
        await flushed(spy)
        answers: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = app.new_inbox()
        await app.subscribe(inbox, cb=answers.put)
        auth = {"Authorization": f"Bearer {narrow.api_key}", h.REQUEST_ID: request_id}
        await app.publish(subjects.CHAT, msgspec.json.encode(BODY), reply=inbox, headers=auth)
        reply_to = await asyncio.wait_for(seen.get(), 5)
        async with httpx.AsyncClient(timeout=30) as http:
            url = f"{narrow.tail_url}/v1/chat/completions"
            other = asyncio.create_task(
                http.post(url, json=BODY, headers={"Authorization": f"Bearer {narrow.api_key}"})
            )
            await _queued(narrow, 2)  # the slow deployment's queue is full
            refused = ",".join(f"gone--m{n:02d}" for n in range(MAX_TRIED))
            forged = {
                h.REQUEST_ID: request_id,
                h.REPLY: reply_to,
                h.OP: "chat",
                h.ALIAS: "spill",
                h.TRIED: refused,
                h.UNFIT: refused,
                h.DEADLINE: str(int((time.time() + 30) * 1000)),
            }
            body = msgspec.json.encode({**BODY, "model": "spill"})
            quick = len(upstream.calls_for("quick"))
            await proxy.request(subjects.REROUTE, body, timeout=5, headers=forged)  # confirmed
            async with asyncio.timeout(10):
                while True:
                    got = replies.decode_reply((msg := await answers.get()).data, msg.headers)
                    if got.kind in (replies.ReplyKind.FINAL, replies.ReplyKind.ERROR):
                        break
            await other
    finally:
        for nc in (spy, app, proxy):
            await nc.close()
        await head.stop(5)
    assert (got.kind, got.status) == (replies.ReplyKind.ERROR, 503), got.body
    error = msgspec.json.decode(got.body)["error"]
    assert error["code"] == "queue_full", error
    assert f"tries at most {MAX_TRIED + 1} deployments" in error["message"], error
    assert got.deployment == deployment_id("fake", "slow:3000")
    assert len(upstream.calls_for("quick")) == quick  # the fallback was not offered it


async def _queued(stack: Stack, count: int) -> None:
    """Returns once the slow deployment's queue holds ``count`` requests (at most 15 s)."""
    subject = subjects.dispatch(deployment_id("fake", "slow:3000"))
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 15
        while True:
            info = await js.stream_info(subjects.DISPATCH_STREAM, subjects_filter=subject)
            queued = (info.state.subjects or {}).get(subject, 0)
            if queued >= count:
                return
            assert time.monotonic() < deadline, f"{queued} queued"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
