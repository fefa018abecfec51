"""The key pages while Valkey is down: keys are in NATS, spend in Valkey, so the pages still
show every key, say why spend is missing, and let an operator revoke a key."""

from __future__ import annotations

import pytest

from tests.test_admin_papercuts import _valkey_paused
from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_key_pages_show_keys_and_revoke_works_while_valkey_is_down(web: Browser) -> None:
    _, record = await web.stack.new_key("outage-app")
    await web.sign_in()
    with _valkey_paused(web.stack):
        listed = await web.goto("/ui/keys?q=outage-app")
        assert listed.status == 200
        alert = await web.page.locator(".flash.error").inner_text()
        assert alert.startswith("Spend cannot be read: Valkey/Redis did not answer")
        row = web.page.locator("tr", has_text="outage-app")
        assert "\u2013" in await row.inner_text()  # spend blank (an en dash), not $0.00
        assert "$0.00" not in await row.inner_text()
        await web.shot("keys-valkey-down")

        shown = await web.goto(f"/ui/keys/{record.id}")
        assert shown.status == 200
        assert "Spend cannot be read" in await web.page.locator(".flash.error").inner_text()
        assert await web.page.get_by_role("heading", name="Usage, last 30 days").count() == 0
        await web.page.get_by_role("button", name="Revoke").click()
        await web.page.get_by_role("button", name="Click again").click()
        await web.page.wait_for_url(f"**/ui/keys/{record.id}")
        assert await web.page.locator(".badge.bad", has_text="revoked").count() == 1
        await web.shot("key-revoked-valkey-down")
    revoked = await web.stack.admin("GET", f"/keys/{record.id}")
    assert revoked.json()["disabled"] is True
