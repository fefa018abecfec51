"""The live Overview and Queues while their tab is hidden.

Each second of an open live stream counts as use of the session, so an admin who signed in
(landing on the Overview) and walked away stayed signed in until the 24-hour limit, the tab
hidden behind others. The pages now stream only while they are in view.

Headless Chromium keeps every page visible, so the page is told it is hidden the way a
browser tells it: ``document.visibilityState`` and ``document.hidden`` change and a
``visibilitychange`` event fires. The page's ``EventSource`` objects are recorded (they are
the real ones) to see which streams are open.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import Browser
from tests.ui.test_ui_live_stall import WATCH_STALE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VISIBILITY = """(() => {
    let hidden = false;
    const proto = Document.prototype;
    Object.defineProperty(proto, "hidden", { configurable: true, get: () => hidden });
    Object.defineProperty(proto, "visibilityState", {
        configurable: true, get: () => (hidden ? "hidden" : "visible"),
    });
    window.__setHidden = (value) => {
        hidden = value;
        document.dispatchEvent(new Event("visibilitychange"));
    };
    const Real = window.EventSource;
    window.__streams = [];
    window.EventSource = class extends Real {
        constructor(...args) { super(...args); window.__streams.push(this); }
    };
})();"""

OPEN_STREAMS = "() => window.__streams.filter((s) => s.readyState !== EventSource.CLOSED).length"
# (A function, not an expression: the pages' CSP allows no eval.)
STREAMS_OPEN = (
    "(n) => window.__streams.filter((s) => s.readyState !== EventSource.CLOSED).length === n"
)


async def _open_streams(page: Any) -> int:
    return int(await page.evaluate(OPEN_STREAMS))


async def _until_open(page: Any, count: int) -> None:
    await page.wait_for_function(STREAMS_OPEN, arg=count, timeout=5_000)


async def test_a_hidden_page_closes_its_stream_and_opens_it_when_shown(web: Browser) -> None:
    page = web.page
    await page.context.add_init_script(VISIBILITY)
    await web.sign_in()  # lands on the Overview, live
    stamp = page.locator("[data-updated]", has_text="Last update")
    await stamp.wait_for(timeout=15_000)
    assert await _open_streams(page) == 1

    await page.evaluate("window.__setHidden(true)")
    await _until_open(page, 0)
    # Hidden past the stall limit (5 s): nothing is counted as a stall.
    assert await page.evaluate(WATCH_STALE, 6500) == []
    last = await stamp.inner_text()
    assert await _open_streams(page) == 0

    await page.evaluate("window.__setHidden(false)")
    await _until_open(page, 1)
    # Shown again: updates resume, and the time it was hidden is no stall either.
    assert await page.evaluate(WATCH_STALE, 2500) == []
    assert await stamp.inner_text() != last
    assert await page.locator("[data-problem]").is_hidden()
    await web.shot("overview-shown-again")

    # Queues, the same; shown again it loads the history it missed, then streams.
    await web.goto("/ui/queues")
    await stamp.wait_for(timeout=15_000)
    await page.evaluate("window.__setHidden(true)")
    await _until_open(page, 0)
    async with page.expect_response("**/ui/api/history*") as history:
        await page.evaluate("window.__setHidden(false)")
    assert (await history.value).ok
    await _until_open(page, 1)
    last = await stamp.inner_text()
    await page.wait_for_function(
        "([node, text]) => node.textContent !== text",
        arg=[await stamp.element_handle(), last],
        timeout=5_000,
    )
    assert await page.locator("[data-stale]").is_hidden()
    await web.shot("queues-shown-again")

    # Signed out (in another tab) while hidden: shown again, the page says updates stopped.
    await page.evaluate("window.__setHidden(true)")
    await _until_open(page, 0)
    other = await page.context.new_page()
    await other.goto(web.base + "/ui/keys")
    await other.get_by_role("button", name="Sign out").click()
    await other.wait_for_url("**/ui/signin")
    await other.close()
    await page.evaluate("window.__setHidden(false)")
    problem = page.locator("[data-problem]")
    await problem.wait_for(state="visible", timeout=10_000)
    assert (await problem.inner_text()).startswith("Live updates stopped (signed out")
    assert await page.locator("[data-stale]").is_hidden()
    assert await _open_streams(page) == 0
    await web.shot("overview-shown-after-signout")
