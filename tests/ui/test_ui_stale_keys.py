"""The pages a stale form ends on, in Chromium: a key saved after someone else changed it, a
New key form sent again, a secret's confirmation gone stale, a form sent after sign-out.
Screenshots go to artifacts/ui/."""

from __future__ import annotations

import asyncio

import pytest

from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WAIT_S = 30.0  # any one wait below; more is a failure that says what it waited for


async def _listed(web: Browser, name: str, total: int) -> None:
    """Until the gateway's key index lists ``total`` keys named like ``name`` (it follows the
    bucket a moment behind): a bounded wait, failing with what it saw."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (found := (await web.stack.admin("GET", f"/keys?q={name}")).json()["total"]) != total:
        assert asyncio.get_running_loop().time() < deadline, f"{name}: {found} listed, not {total}"
        await asyncio.sleep(0.05)


async def _sign_out_in_another_tab(web: Browser) -> None:
    """Signs the session out from a second tab, as a person would, and returns once the
    sign-out has landed (that tab shows the sign-in page). Every wait is bounded: the test once
    hung in CI for its whole 120 s in this step, and Playwright's ``new_page`` and ``close``
    take no timeout (its other waits end in 30 s with an error naming what they waited for).
    The tab is the keys list, not the Overview: no live stream to end and reconnect while the
    tab closes (the Overview's sign-out is test_ui_live_hidden's)."""
    other = await asyncio.wait_for(web.page.context.new_page(), WAIT_S)
    try:
        await other.goto(web.base + "/ui/keys")
        await other.get_by_role("button", name="Sign out").click()
        await other.wait_for_url("**/ui/signin", timeout=WAIT_S * 1000)
    finally:
        await asyncio.wait_for(other.close(), WAIT_S)


async def test_stale_forms_say_what_happened(web: Browser) -> None:
    await web.sign_in()
    page = web.page
    _, record = await web.stack.new_key("ui-stale-key", budget_usd=5.0)
    # Written straight to the bucket: the gateway's index knows the key a moment later.
    await _listed(web, "ui-stale-key", 1)
    await web.goto(f"/ui/keys/{record.id}")
    assert await page.locator("#f-expires").get_attribute("type") == "datetime-local"
    patched = await web.stack.admin("PATCH", f"/keys/{record.id}", {"budget_usd": 50})
    assert patched.status_code == 200, patched.text
    await page.get_by_label("Owner").fill("second tab")
    await page.get_by_role("button", name="Save").click()
    alert = page.locator('[data-error-for="form"]')
    assert "changed by someone else" in await alert.inner_text()
    assert await page.get_by_label("Owner").input_value() == "second tab"
    await web.shot("stale-key-conflict")
    await alert.get_by_role("link", name="Reload").click()
    assert await page.get_by_label("Budget (USD)").input_value() == "50.0"

    await web.goto("/ui/keys/new")
    await page.get_by_label("Name").fill("ui-sent-twice")
    await page.get_by_role("button", name="Create key").click()
    await page.wait_for_selector("[data-new-key]")
    await page.reload()  # the browser posts the form again
    assert "No second key was created" in await page.locator("[data-resent]").inner_text()
    await web.shot("stale-key-resent")
    listed = (await web.stack.admin("GET", "/keys?q=ui-sent-twice")).json()
    assert listed["total"] == 1
    # Deleted since (as an index a moment behind misses a key just made), it is named by id.
    key_id = listed["keys"][0]["id"]
    assert (await web.stack.admin("DELETE", f"/keys/{key_id}")).status_code == 200
    await _listed(web, "ui-sent-twice", 0)
    await page.reload()
    resent = await page.locator("[data-resent]").inner_text()
    assert f"created the key with id {key_id}. No second key was created." in resent
    assert "cannot be shown again" in await page.locator("main").inner_text()
    await web.shot("stale-key-resent-unlisted")

    stored = await web.stack.admin("PUT", "/secrets/ui-stale-secret", {"value": "sk-ui-stale-1"})
    assert stored.status_code == 200, stored.text
    await web.goto("/ui/secrets/ui-stale-secret/delete")
    base = (await web.stack.admin("GET", "/providers")).json()["fake"]["api_base"]
    provider = {"kind": "openai-compatible", "api_base": base, "secret": "ui-stale-secret"}
    assert (await web.stack.admin("PUT", "/providers/ui-stale", provider)).status_code == 200
    try:
        await page.get_by_label("Type ui-stale-secret to confirm").fill("ui-stale-secret")
        await page.get_by_role("button", name="Delete ui-stale-secret").click()
        notice = page.locator('[data-error-for="form"]')
        assert "changed since this page was shown" in await notice.inner_text()
        await web.shot("stale-secret-confirm")
    finally:
        await web.stack.admin("DELETE", "/providers/ui-stale")
        await web.stack.admin("DELETE", "/secrets/ui-stale-secret")

    # Signed out in another tab: this tab's form gets the sign-in page, then its page again.
    # The other tab is a page without a live stream, and the sign-out has landed (its tab
    # shows the sign-in page) before this tab acts: see _sign_out_in_another_tab.
    await web.goto("/ui/keys/new")
    await _sign_out_in_another_tab(web)
    await page.get_by_label("Name").fill("ui-after-signout")
    await page.get_by_role("button", name="Create key").click()
    assert "Your session ended" in await page.locator(".flash.error").inner_text()
    await web.shot("stale-session-ended")
    await page.get_by_label("Your name").fill("Ada Admin")
    token = web.stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(web.base + "/ui/keys/new")
