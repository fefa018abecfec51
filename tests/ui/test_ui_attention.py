"""The admin Overview and Queues list deployments by what needs attention, in the order
``switchyard top`` uses: during a burst the saturated deployment was 56th of 57 on both pages
(they listed deployments by name) while ``top`` showed it first."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from tests.ui.conftest import HELD, Browser
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _get(web: Browser, path: str) -> Any:
    """A page or a call with the browser's session (its cookies), outside the page."""
    response = await web.page.request.get(web.base + path)
    assert response.ok, (path, response.status)
    return response


async def _saturated(web: Browser) -> list[dict[str, Any]]:
    """The overview's deployments once ``HELD`` serves at its concurrency with more waiting."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        deployments: list[dict[str, Any]] = (await (await _get(web, "/ui/api/overview")).json())[
            "deployments"
        ]
        held = next(d for d in deployments if d["id"] == HELD)
        if held["queue"] and held["queue"]["in_flight"] == 1 and held["queue"]["waiting"] >= 1:
            return deployments
        await asyncio.sleep(0.3)
    raise AssertionError(f"{HELD} never saturated")


async def test_a_saturated_deployment_comes_first_on_overview_and_queues(
    web: Browser, upstream: FakeOpenAI
) -> None:
    upstream.set_mode("held", "gate:ui-attention")
    await web.sign_in()
    await web.goto("/ui/queues")  # opened before the burst: the live page moves its card up
    await web.page.mouse.move(0, 0)  # not over a card's button (cards do not move under one)
    cards = web.page.locator("[data-dep]")
    assert await cards.first.get_attribute("data-dep") != HELD  # all idle: by id
    async with httpx.AsyncClient(timeout=60) as http:
        requests = web.chats(http, "held", 4, "a")
        try:
            deployments = await _saturated(web)
            # The data the pages are drawn from, and each event of their live stream.
            assert deployments[0]["id"] == HELD
            # The pages as the server renders them.
            overview = await (await _get(web, "/ui/")).text()
            linked = re.findall(r'href="/ui/queues#dep-([^"]+)"', overview)
            assert linked[0] == HELD
            assert len(linked) == len(deployments)
            queues = await (await _get(web, "/ui/queues")).text()
            assert re.findall(r'data-dep="([^"]+)"', queues)[0] == HELD
            # The Queues page opened before, kept live, without a reload.
            await web.page.wait_for_function(
                "(id) => document.querySelector('[data-dep]').dataset.dep === id",
                arg=HELD,
                timeout=15_000,
            )
            assert await cards.count() == len(deployments)
        finally:
            upstream.open_gate("ui-attention")
        answers = await asyncio.gather(*requests)
    assert [r.status_code for r in answers] == [200] * 4
