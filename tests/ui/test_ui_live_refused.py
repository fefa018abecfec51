"""A live page refused because too many live streams are open with its token (429) opens its
stream again after the answer's ``Retry-After``; it stopped live updates for good before
("Reload the page"), since EventSource gives up on any answer that is not a stream.

The admin token's slots are taken for real: 50 ``/admin/v1/stream`` streams held with the admin
token (the page's session is the admin token's, counted with them), then one closed.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from switchyard.admin.read_slots import STREAMS_AT_ONCE
from tests.ui.conftest import Browser
from tests.ui.test_ui_live_hidden import STREAMS_OPEN, VISIBILITY

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_page_refused_for_too_many_streams_opens_again_after_retry_after(
    web: Browser,
) -> None:
    page, stack = web.page, web.stack
    await page.context.add_init_script(VISIBILITY)
    await web.sign_in()  # lands on the Overview, live
    await page.wait_for_function(STREAMS_OPEN, arg=1, timeout=10_000)
    await page.evaluate("window.__setHidden(true)")  # its own stream closed: no slot held
    await page.wait_for_function(STREAMS_OPEN, arg=0, timeout=5_000)
    limits = httpx.Limits(max_connections=STREAMS_AT_ONCE + 10)
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, limits=limits) as http,
        contextlib.AsyncExitStack() as held,
    ):
        opened: list[httpx.Response] = []
        for _ in range(STREAMS_AT_ONCE * 20):  # (the page's closed stream is seen within 1 s)
            if len(opened) == STREAMS_AT_ONCE:
                break
            got = await held.enter_async_context(
                http.stream("GET", "/admin/v1/stream", headers=stack.admin_headers())
            )
            if got.status_code == 200:
                opened.append(got)
            else:
                await got.aclose()
                await asyncio.sleep(0.1)
        assert len(opened) == STREAMS_AT_ONCE
        async with page.expect_response("**/ui/api/stream") as refused:
            await page.evaluate("window.__setHidden(false)")
        assert (await refused.value).status == 429
        problem = page.locator("[data-problem]")
        await problem.wait_for(state="visible", timeout=10_000)
        assert "Too many live pages" in await problem.inner_text()
        await web.shot("overview-live-refused")
        await opened[0].aclose()  # a slot is free again (seen at its stream's next send)
        await page.wait_for_function(STREAMS_OPEN, arg=1, timeout=45_000)  # Retry-After: 30
        await problem.wait_for(state="hidden", timeout=10_000)  # the next update clears it
