"""A route swapped away from a deployment and back (A->B->A) still serves what was queued.

A request waiting in a deployment's queue when that deployment leaves every route is handed
back to the heads unserved (a removal bounce). Each bounce used to count as a tried deployment
and as an attempt, so a request queued for A, moved to B, then bounced off B once A was routed
again had "tried" both and ended as 502 ``all_deployments_failed``, though no provider was ever
called for it. On the session stack: the route is this module's own alias, removed at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from switchyard.bus import identities, subjects
from switchyard.runtime.definitions import DRAIN_ACK_PENDING
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALIAS = "route-swap"


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait for ``check`` (generous: a loaded machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _ask(stack: Stack, text: str) -> httpx.Response:
    """One chat request; re-sent while a head has not seen the new alias yet (404)."""
    async with httpx.AsyncClient(timeout=90) as http:
        while True:
            response = await http.post(
                f"{stack.tail_url}/v1/chat/completions",
                json={"model": ALIAS, "messages": [{"role": "user", "content": text}]},
                headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "60"},
            )
            if response.status_code != 404:
                return response
            await asyncio.sleep(0.1)


async def _route_to(stack: Stack, model: str) -> None:
    route = {"deployments": [{"provider": "fake", "model": model, "concurrency": 1}]}
    changed = await stack.admin("PUT", f"/routes/{ALIAS}", route)
    assert changed.status_code == 200, changed.text


async def _called(upstream: FakeOpenAI, model: str) -> bool:
    return bool(upstream.calls_for(model))


async def _waits(stack: Stack, dep_id: str) -> bool:
    """Whether one request waits for ``dep_id``: in its queue, or held for its fair turn."""
    listing = (await stack.admin("GET", "/deployments")).json()["deployments"]
    for dep in listing:
        if dep["id"] == dep_id:
            return int((dep.get("queue") or {}).get("waiting", 0)) == 1
    return False


async def _opened(nc: NATS, dep_id: str) -> bool:
    """Whether the control service opened a removed deployment's queue (so what waits there
    is handed back at once), which it does a moment after the route change."""
    info = await nc.jetstream().consumer_info(
        subjects.DISPATCH_STREAM, subjects.dispatch_consumer(dep_id)
    )
    return info.config.max_ack_pending == DRAIN_ACK_PENDING


async def test_a_route_swapped_away_and_back_serves_what_was_queued(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    tag = secrets.token_hex(4)  # the fake's gates stay open once opened: fresh ones per run
    gate_a, gate_b = f"swap-a-{tag}", f"swap-b-{tag}"
    model_a, model_b = f"gate:{gate_a}", f"gate:{gate_b}"
    dep_a, dep_b = deployment_id("fake", model_a), deployment_id("fake", model_b)
    nc = await stack.connect(identities.MODELPROXY.name)
    pending: list[asyncio.Future[Any]] = []
    try:
        # B's only slot is taken by a call that outlives every route change below.
        await _route_to(stack, model_b)
        on_b = asyncio.ensure_future(_ask(stack, "held on B"))
        pending.append(on_b)
        await _until(lambda: _called(upstream, model_b), "a call held on B")
        # The route moves to A: one call holds A's slot, the next request waits behind it.
        await _route_to(stack, model_a)
        await _until(lambda: _opened(nc, dep_b), "B's queue opened after its removal")
        on_a = asyncio.ensure_future(_ask(stack, "held on A"))
        pending.append(on_a)
        await _until(lambda: _called(upstream, model_a), "a call held on A")
        queued = asyncio.ensure_future(_ask(stack, "queued"))
        pending.append(queued)
        await _until(lambda: _waits(stack, dep_a), "a request queued for A")

        # A -> B: the queued request is handed back and waits behind B's call.
        await _route_to(stack, model_b)
        await _until(lambda: _waits(stack, dep_b), "the request queued for B")
        assert not queued.done(), queued.result().text

        # B -> A: handed back again, A takes it (it used to end as a 502 here).
        await _route_to(stack, model_a)

        async def back_on_a() -> bool:
            # Waiting behind A's call, or (A's queue still open from its removal) held at
            # A's gate; or answered already, as it was before removal bounces.
            return (
                queued.done() or await _waits(stack, dep_a) or len(upstream.calls_for(model_a)) > 1
            )

        await _until(back_on_a, "the request back at A")
        upstream.open_gate(gate_a)
        upstream.open_gate(gate_b)
        answer = await asyncio.wait_for(queued, 60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-switchyard-deployment"] == dep_a
        # Two bounces, no attempt but the one that answered.
        assert answer.headers["x-switchyard-attempts"] == "1"
        for held, dep in ((on_a, dep_a), (on_b, dep_b)):
            done = await asyncio.wait_for(held, 60)
            assert done.status_code == 200, done.text
            assert done.headers["x-switchyard-deployment"] == dep
        assert len(upstream.calls_for(model_b)) == 1  # the queued request never reached B
    finally:
        upstream.open_gate(gate_a)
        upstream.open_gate(gate_b)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await stack.admin("DELETE", f"/routes/{ALIAS}")
        await nc.close()
