"""The pages a stale form ends on, in Chromium: a key saved after someone else changed it, a
New key form sent again, a secret's confirmation gone stale, a form sent after sign-out.
Screenshots go to artifacts/ui/."""

from __future__ import annotations

import asyncio

import pytest

from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_stale_forms_say_what_happened(web: Browser) -> None:
    await web.sign_in()
    page = web.page
    _, record = await web.stack.new_key("ui-stale-key", budget_usd=5.0)
    # Written straight to the bucket: the gateway's index knows the key a moment later.
    while not (await web.stack.admin("GET", "/keys?q=ui-stale-key")).json()["total"]:
        await asyncio.sleep(0.05)
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
    while (await web.stack.admin("GET", "/keys?q=ui-sent-twice")).json()["total"]:
        await asyncio.sleep(0.05)
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
    await web.goto("/ui/keys/new")
    other = await page.context.new_page()
    await other.goto(web.base + "/ui/")
    await other.get_by_role("button", name="Sign out").click()
    await other.close()
    await page.get_by_label("Name").fill("ui-after-signout")
    await page.get_by_role("button", name="Create key").click()
    assert "Your session ended" in await page.locator(".flash.error").inner_text()
    await web.shot("stale-session-ended")
    await page.get_by_label("Your name").fill("Ada Admin")
    token = web.stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(web.base + "/ui/keys/new")
