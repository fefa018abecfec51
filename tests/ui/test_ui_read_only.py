"""Signed in with the read-only admin token: the web app says so, and no page offers a control
that would be refused (every change is a 403 ``admin_read_only``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What makes a change: a control of a form that posts (sign-out aside), or a link to a page
# that exists only to make one.
CHANGES = (
    "form[method=post]:not(.signout) :is(button, input:not([type=hidden]), select, textarea), "
    'a[href="/ui/keys/new"], a[href^="/ui/routes/edit"]:text-is("New route"), '
    'a[href$="/delete"]'
)


async def _usable(page: Any) -> list[str]:
    """The change-making controls on the page a person could use: shown and enabled."""
    found = []
    controls = page.locator(CHANGES)
    for i in range(await controls.count()):
        control = controls.nth(i)
        if await control.is_visible() and await control.is_enabled():
            found.append(await control.evaluate("e => e.outerHTML.slice(0, 120)"))
    return found


async def test_a_read_only_session_is_named_and_offered_no_change_on_the_keys_pages(
    web: Browser,
) -> None:
    """One admin token did everything: whoever only looked at spend held every secret too."""
    _, record = await web.stack.new_key("ui-read-only")
    page = web.page
    await web.sign_in("Rita Reader", read_only=True)
    badge = page.locator(".who .read-only")
    assert await badge.inner_text() == "read-only"
    for path in ("/ui/keys", f"/ui/keys/{record.id}", "/ui/keys/new", "/ui/routes", "/ui/secrets"):
        await web.goto(path)
        await page.wait_for_load_state("load")
        assert await page.locator("h1").count() == 1, path
        assert await _usable(page) == [], path
        assert await badge.is_visible(), path
    await web.goto("/ui/keys")
    assert await page.get_by_role("link", name="New key").count() == 0
    await web.shot("read-only-keys")
    # Sign-out stays usable; the same pages signed in with the admin token offer the controls,
    # so the check above finds them when they are there.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(web.base + "/ui/signin")
    await web.sign_in("Ada Admin")
    assert await badge.count() == 0
    for path in ("/ui/keys", f"/ui/keys/{record.id}"):
        await web.goto(path)
        assert await _usable(page) != [], path
