"""The live Overview and Queues when the gateway stalls without closing the connection (a
hung or stopped process): only the small "Last update" stamp stopped, the figures looked
current and nothing warned for 20 s and more. Now the page counts the quiet itself."""

from __future__ import annotations

import os
import re
import signal

import pytest

from tests.support import pause
from tests.ui.conftest import ARTIFACTS, Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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
