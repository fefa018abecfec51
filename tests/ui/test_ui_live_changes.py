"""The live Queues page while another admin changes the route table under it: the card of a
deleted busy route kept "saturated: fair order · in flight 1/1 · held 2" for ever while "Last
update" ticked on, its "Send a test request" looked like it would work, and deployments added
meanwhile never appeared until a reload."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from switchyard.schemas.routing import deployment_id
from tests.ui.conftest import Browser
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GONE = deployment_id("fake", "ctl:ui-gone")
FRESH = deployment_id("fake", "ctl:ui-fresh")


async def _listed(web: Browser, dep: str) -> None:
    """Wait until the control service's overview has ``dep`` (the page is rendered from it)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        deployments = (await web.stack.admin("GET", "/deployments")).json()["deployments"]
        if any(d["id"] == dep for d in deployments):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{dep} never listed")


async def test_a_deleted_deployment_is_marked_removed_and_a_new_one_gets_a_card(
    web: Browser, upstream: FakeOpenAI
) -> None:
    stack, page = web.stack, web.page
    upstream.set_mode("ui-gone", "gate:ui-gone")
    busy = {"deployments": [{"provider": "fake", "model": "ctl:ui-gone", "concurrency": 1}]}
    async with stack.live_routes({"ui-gone": busy}), httpx.AsyncClient(timeout=60) as http:
        await _listed(web, GONE)
        await web.sign_in()
        await web.goto("/ui/queues")
        await page.mouse.move(0, 0)  # not over a card's button (cards do not move under one)
        gone = page.locator(f"[data-dep='{GONE}']")
        # Five on one slot: two heads may each send one straight to dispatch before the
        # deployment is marked saturated (three were not always enough to see the badge).
        requests = web.chats(http, "ui-gone", 5, "g")
        try:
            await gone.locator("[data-f=saturated]").wait_for(timeout=15_000)
            await page.wait_for_function(
                "(f) => f.textContent === '1'",
                arg=await gone.locator("[data-f=in_flight]").element_handle(),
                timeout=15_000,
            )

            # Another admin deletes the busy route and adds another one.
            assert (await stack.admin("DELETE", "/routes/ui-gone")).status_code == 200
            fresh_route = {"deployments": [{"provider": "fake", "model": "ctl:ui-fresh"}]}
            put = await stack.admin("PUT", "/routes/ui-fresh", fresh_route)
            assert put.status_code == 200, put.text

            # The deleted deployment's card says so and shows nothing as current.
            await page.locator(f"[data-dep='{GONE}'][data-removed]").wait_for(timeout=15_000)
            state = await gone.locator("[data-f=state]").inner_text()
            assert state == "removed from the route table"
            assert await gone.locator("[data-f=saturated]").is_hidden()
            assert await gone.locator("[data-held]").is_hidden()
            for field in ("waiting", "in_flight", "held", "oldest_wait_s"):
                assert await gone.locator(f"[data-f={field}]").inner_text() == "\u2013"
            assert await gone.get_by_role("button", name="Send a test request").count() == 0
            assert await gone.get_by_role("button", name="End cooldown").count() == 0

            # The new deployment has a card like the others, without a reload, that works.
            fresh = page.locator(f"[data-dep='{FRESH}']")
            await fresh.wait_for(timeout=15_000)
            assert await fresh.locator("h2").inner_text() == "fake/ctl:ui-fresh"
            assert await fresh.locator("[data-f=aliases]").inner_text() == "ui-fresh"
            assert await fresh.locator("[data-f=id]").inner_text() == FRESH
            await page.wait_for_function(  # "?" until its queue is first read
                "(w) => w.textContent === '0'",
                arg=await fresh.locator("[data-f=waiting]").element_handle(),
                timeout=15_000,
            )
            assert await fresh.locator(f"svg[data-chart='{FRESH}']").count() == 1
            # The removed card goes last, after the new one.
            order = await page.eval_on_selector_all(
                "[data-dep]", "cs => cs.map(c => c.dataset.dep)"
            )
            assert order[-1] == GONE
            assert order.index(FRESH) < order.index(GONE)
            await fresh.get_by_role("button", name="Send a test request").click()
            result = fresh.locator("[data-f=test-result]")
            await result.and_(page.locator("[data-status]")).wait_for(timeout=30_000)
            assert await result.get_attribute("data-status") == "200"
            assert page.url == web.base + "/ui/queues"  # answered in place, no page load
            await fresh.scroll_into_view_if_needed()
            await web.shot("queues-removed-and-new")
        finally:
            upstream.open_gate("ui-gone")
            await asyncio.gather(*requests, return_exceptions=True)
            await stack.admin("DELETE", "/routes/ui-fresh")
