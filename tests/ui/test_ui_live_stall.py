"""The live Overview and Queues when the gateway stalls without closing the connection (a
hung or stopped process): only the small "Last update" stamp stopped, the figures looked
current and nothing warned for 20 s and more. Now the page counts the quiet itself."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from typing import Any

import pytest

from tests.support import pause
from tests.ui.conftest import ARTIFACTS, Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every text the stall banner shows while ``ms`` pass.
WATCH_STALE = """(ms) => new Promise((done) => {
    const box = document.querySelector("[data-stale]");
    const seen = [];
    const note = () => { if (!box.classList.contains("hidden")) seen.push(box.textContent); };
    new MutationObserver(note).observe(box, { attributes: true, childList: true, subtree: true });
    setTimeout(() => done(seen), ms);
})"""
WARNING = re.compile(r"No update for (\d+) s: the gateway may be stalled\. .+")


async def test_a_stalled_gateway_is_said_until_updates_resume(web: Browser) -> None:
    await web.sign_in()
    queues = await web.page.context.new_page()
    await queues.goto(web.base + "/ui/queues")
    pages = {"overview": web.page, "queues": queues}
    for page in pages.values():
        await page.locator("[data-updated]", has_text="Last update").wait_for(timeout=15_000)
        assert await page.locator("[data-stale]").is_hidden()
    gateway = web.stack.process("gateway").pid
    assert gateway is not None
    await pause(gateway)
    try:
        for name, page in pages.items():
            stale = page.locator("[data-stale]")
            await stale.wait_for(state="visible", timeout=15_000)
            found = WARNING.fullmatch(await stale.inner_text())
            assert found, await stale.inner_text()
            assert 5 <= int(found[1]) <= 20
            await page.wait_for_function(  # it counts on, once a second
                "([box, n]) => Number(box.textContent.match(/No update for (\\d+) s/)[1]) > n",
                arg=[await stale.element_handle(), int(found[1])],
                timeout=5_000,
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"{name}-stalled.png"), full_page=True)
    finally:
        os.kill(gateway, signal.SIGCONT)
    for page in pages.values():  # the next event clears it, with no reload
        await page.locator("[data-stale]").wait_for(state="hidden", timeout=15_000)
        assert await page.locator("[data-problem]").is_hidden()
    await queues.close()


async def test_a_slow_history_is_not_taken_for_a_stall(web: Browser) -> None:
    """The Queues page loads its 15-minute history before it opens the stream, but its stall
    clock started when the script loaded: a history answer slower than 5 s showed "No update
    for 5 s: the gateway may be stalled" before the stream was even open."""
    await web.sign_in()
    page = web.page
    answered = asyncio.Event()

    async def slow(route: Any) -> None:  # the gateway's own answer, 7 s late
        await asyncio.sleep(7)
        await route.continue_()
        answered.set()

    await page.route("**/ui/api/history*", slow)
    await web.goto("/ui/queues")
    seen_stale = await page.evaluate(WATCH_STALE, 6500)
    assert seen_stale == []
    await asyncio.wait_for(answered.wait(), 10)
    await page.locator("[data-updated]", has_text="Last update").wait_for(timeout=15_000)
    assert await page.locator("[data-stale]").is_hidden()
    await web.shot("queues-slow-history")
    await page.unroute("**/ui/api/history*")
