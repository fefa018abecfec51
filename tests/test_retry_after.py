"""The head's overload answers: a ``Retry-After`` sized by the full queue, and the deployment
that refused named in the answer.

Full queues need their own stack (``tight``): the session stack's queue limits are 1000 and
its model-proxies drain whatever a test puts in. ``tight`` runs a tail and one head only, with
small limits and no model-proxy or control service, so a queue the test fills stays full and
the scheduling record the test writes (as the feeder would) is the only one. The answers that
follow provider failures use the session stack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus import replies, subjects
from switchyard.schemas.routing import deployment_id
from switchyard.schemas.scheduling import SCHED_ENCODER, SchedState
from tests.stacks import Stack, start_stack
from tests.support import bus_answer
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

QUEUE_LIMIT = 4
TENANT_LIMIT = 2
PACE_S = 5.0  # the time per request the test's scheduling record claims
FULL = deployment_id("fake", "echo:full")
HELD = deployment_id("fake", "echo:held")
BODY = {"model": "full", "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tight(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 1}
        },
        "routes": {
            "full": {"deployments": [{"provider": "fake", "model": "echo:full"}]},
            "held": {"deployments": [{"provider": "fake", "model": "echo:held"}]},
        },
        "streams": {"dispatch_queue_limit": QUEUE_LIMIT, "hold_tenant_limit": TENANT_LIMIT},
        "stack": {"heads": 1},
    }
    stack = await start_stack(tmp_path_factory.mktemp("tight"), extra, components=["tail", "head"])
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _fill(stack: Stack, subject: str, count: int) -> None:
    """``count`` stored messages on ``subject`` (nothing consumes them in ``tight``)."""
    nc = await stack.connect("head")
    try:
        js = nc.jetstream(timeout=10)
        for i in range(count):
            await js.publish(subject, b"{}", headers={h.NATS_MSG_ID: f"{subject}-{i}"})
    finally:
        await nc.close()


async def _record(stack: Stack, deployment: str, state: SchedState) -> None:
    """Write ``deployment``'s scheduling record, as the feeder does."""
    nc = await stack.connect("control")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.SCHED_BUCKET)
        await kv.put(f"dep.{deployment}", SCHED_ENCODER.encode(state))
    finally:
        await nc.close()


async def _answer(nc: NATS, body: Mapping[str, object], api_key: str) -> replies.Reply:
    """The final or error message of one request on the NATS API."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        h.DEADLINE: str(int((time.time() + 30) * 1000)),
    }
    return await bus_answer(nc, body, headers)


async def test_a_full_queue_asks_for_the_time_it_needs_to_drain(tight: Stack) -> None:
    """4 queued, one at a time, 5 s each: 20 s to drain, so 10-20 s (it was always 1 s),
    spread so that refused callers do not all come back at once. A record from no running
    feeder (written long ago) leaves the head dispatching first come first served, and its
    time per request still sizes the wait."""
    await _record(tight, FULL, SchedState(window_s=PACE_S, at=time.time() - 3600))
    await _fill(tight, subjects.dispatch(FULL), QUEUE_LIMIT)
    url = f"{tight.tail_url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {tight.api_key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        # The head follows the record on its own: until it has it, 1 s per request (2-4 s).
        began = time.monotonic()
        while int((await http.post(url, json=BODY, headers=auth)).headers["retry-after"]) < 10:
            assert time.monotonic() - began < 20, "the head never read the record"
            await asyncio.sleep(0.1)
        refused = [await http.post(url, json=BODY, headers=auth) for _ in range(12)]
    assert {r.status_code for r in refused} == {503}, refused[0].text
    assert {r.json()["error"]["code"] for r in refused} == {"queue_full"}
    waits = [int(r.headers["retry-after"]) for r in refused]  # an integer, as RFC 9110 says
    assert all(10 <= w <= 20 for w in waits), waits
    assert len(set(waits)) > 1, waits  # 12 draws of 11 values: all equal ~1e-12
    nc = await tight.connect("app")
    try:
        reply = await _answer(nc, BODY, tight.api_key)
    finally:
        await nc.close()
    assert (reply.status, reply.deployment, reply.attempts) == (503, FULL, 1)
    assert reply.retry_after is not None
    assert 10 <= reply.retry_after <= 20


async def test_a_full_tenant_queue_asks_for_the_time_it_needs_to_drain(tight: Stack) -> None:
    """The tenant's own HOLD queue (2 requests, 5 s each, at best the whole deployment):
    5-10 s, and the answer names the deployment."""
    api_key, _ = await tight.new_key("tenant", team="t1")
    await _fill(tight, subjects.hold(HELD, "default", "t1"), TENANT_LIMIT)
    # Until the head has seen the record it sends the request to the dispatch queue: full
    # too, so that answer is a quick 503 and the loop asks again.
    await _fill(tight, subjects.dispatch(HELD), QUEUE_LIMIT)
    nc = await tight.connect("app")
    try:
        began = time.monotonic()
        while True:
            # Fresh each time: with no feeder's lease, a record speaks for 10 s after it is written.
            await _record(tight, HELD, SchedState(held=True, window_s=PACE_S, at=time.time()))
            reply = await _answer(nc, {**BODY, "model": "held"}, api_key)
            if reply.status == 429 or time.monotonic() - began > 20:
                break
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert reply.status == 429, reply.body
    assert msgspec.json.decode(reply.body)["error"]["code"] == "tenant_queue_full"
    assert (reply.deployment, reply.attempts) == (HELD, 1)
    assert reply.retry_after is not None
    assert 5 <= reply.retry_after <= 10


async def test_exhausted_answers_name_the_deployment(stack: Stack) -> None:
    """429 after every deployment rate limited, and 503 ``secret_unavailable``, name the
    deployment and the attempts (as ``all_deployments_failed`` does). Refused while every
    candidate cools down, before any attempt, the answer names none: none refused it."""
    limited = deployment_id("fake", "status:429")
    nc = await stack.connect("app")
    try:
        for _ in range(3):  # a loaded machine may see the 2 s cooldown end before a head does
            await stack.admin("DELETE", f"/deployments/{limited}/cooldown")
            await asyncio.sleep(0.2)  # every head has heard it (as the end of the test waits)
            first = await _answer(nc, {**BODY, "model": "err429"}, stack.api_key)
            until = time.monotonic() + 1.0
            while time.monotonic() < until:  # until every head follows the cooldown it started
                cooling = await _answer(nc, {**BODY, "model": "err429"}, stack.api_key)
                code = msgspec.json.decode(cooling.body)["error"]["code"]
                if code == "deployments_rate_limited":
                    break
                await asyncio.sleep(0.05)
            if code == "deployments_rate_limited":
                break
        locked = await _answer(nc, {**BODY, "model": "nokey"}, stack.api_key)
    finally:
        await nc.close()
        # The next test of `err429` expects it to fail, not to be cooling down (as
        # tests/test_nats_api_replies.py does for err500).
        await stack.admin("DELETE", f"/deployments/{limited}/cooldown")
        await asyncio.sleep(0.2)
    assert (first.status, first.deployment, first.attempts) == (429, limited, 1)
    # The provider's limit, not the key's own (`rate_limit_exceeded`): an operator reading the
    # codes must not blame the client (an explorer's key without limits got the key's code).
    assert msgspec.json.decode(first.body)["error"]["code"] == "deployments_rate_limited"
    assert (locked.status, locked.deployment, locked.attempts) == (
        503,
        deployment_id("fake-locked", "echo"),
        1,
    )
    assert msgspec.json.decode(locked.body)["error"]["code"] == "secret_unavailable"
    # And the operator reads why in a model-proxy's log (an explorer's missing key failed every
    # request with no log line at all).
    logs = [
        proc.log_path.read_text(errors="replace")
        for phase in stack.supervisor.procs
        for proc in phase
        if proc.spec.name.startswith("modelproxy")
    ]
    said = [
        line
        for text in logs
        for line in text.splitlines()
        if "fail or go elsewhere" in line and deployment_id("fake-locked", "echo") in line
    ]
    assert said, "no model-proxy said why the locked deployment's requests fail"
    assert cooling.status == 429
    assert msgspec.json.decode(cooling.body)["error"]["code"] == "deployments_rate_limited"
    assert (cooling.deployment, cooling.attempts) == ("", 0)
