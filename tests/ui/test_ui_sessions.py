"""The Sessions page: who is signed in to this gateway (never a cookie), and "sign out
everywhere" per role, offered to the admin token only, armed by a first click, audited."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ui.conftest import Browser, Recorder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_sessions_page_lists_sessions_and_signs_a_role_out(
    web: Browser, browser: Any
) -> None:
    """A leaked session cookie, or a read-only token handed out, could be stopped only by
    rotating the token and restarting the gateway."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    reader = Browser(web.stack, await context.new_page(), Recorder())
    try:
        await reader.sign_in("Rita Sessions", read_only=True)
        await reader.goto("/ui/sessions")
        assert "Rita Sessions" in await reader.page.locator("table.data").inner_text()
        # A read-only session may look, and is offered no sign-out of others.
        assert await reader.page.get_by_role("button", name="Sign out every").count() == 0

        await web.sign_in("Ada Sessions")
        page = web.page
        await page.get_by_role("link", name="Sessions").click()
        await page.wait_for_url(web.base + "/ui/sessions")
        table = await page.locator("table.data").inner_text()
        assert "Ada Sessions" in table
        assert "Rita Sessions" in table
        mine = page.locator("tr", has_text="Ada Sessions")
        assert "you" in await mine.inner_text()
        assert "read-only" in await page.locator("tr", has_text="Rita Sessions").inner_text()
        scope = await page.locator("[data-scope]").inner_text()
        assert "shared by every gateway replica" in scope
        cookies = {c["value"] for c in await page.context.cookies() if c["name"] == "sy_session"}
        cookies |= {
            c["value"] for c in await reader.page.context.cookies() if c["name"] == "sy_session"
        }
        html = await page.content()
        assert cookies
        assert all(c not in html for c in cookies)
        await web.shot("sessions")

        button = page.get_by_role("button", name="Sign out every read-only session")
        await button.click()  # arms it: no dialog, a second click within 5 s
        armed = page.get_by_role("button", name=re.compile(r"read-only session\? Click again"))
        await armed.wait_for()
        await armed.click()
        await page.wait_for_url(web.base + "/ui/sessions")
        assert "signed out, on every gateway" in await page.locator(".flash.ok").inner_text()
        assert "Rita Sessions" not in await page.locator("table.data").inner_text()
        await web.shot("sessions-read-only-signed-out")

        await reader.goto("/ui/sessions")
        await reader.page.wait_for_url(f"{web.base}/ui/signin**")

        audit = (await web.stack.admin("GET", "/audit?q=signout_all&limit=20")).json()
        entry = next(e for e in audit["entries"] if e["actor"] == "Ada Sessions")
        assert (entry["target"], entry["via"]) == ("read-only sessions", "ui")
    finally:
        await reader.recorder.settle()
        await context.close()
