"""The admin web app against a hostile page or a careless one: markup typed into names stays
text, cross-site and token-less changes are refused, sessions end, and no secret value ever
reaches the browser."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import CANARY, VAULTED, XSS, Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LITERAL_KEY = "sk-literal-" + CANARY[-24:]


async def test_markup_in_names_renders_as_text(web: Browser) -> None:
    await web.sign_in()
    page = web.page
    await web.goto("/ui/keys/new")
    await page.get_by_label("Name").fill(XSS)
    await page.get_by_label("Team").fill(XSS)
    await page.get_by_label("Owner").fill('"><script>alert(2)</script>')
    await page.get_by_role("button", name="Create key").click()
    await page.wait_for_selector("[data-new-key]")
    route = {
        "deployments": [{"provider": "fake", "model": "echo"}],
        "description": XSS,
    }
    assert (await web.stack.admin("PUT", "/routes/xss-route", route)).status_code == 200
    pages = ("/ui/keys", f"/ui/keys?q={XSS[:8]}", "/ui/routes", "/ui/audit", "/ui/spend?by=team")
    for path in pages:
        await web.goto(path)
        await page.wait_for_timeout(200)
        if path != "/ui/spend?by=team":
            shown = page.locator("table.data").get_by_text(XSS).first
            assert await shown.is_visible(), path
        assert await page.locator('img[src="x"]').count() == 0, path
        assert await page.locator("script:not([src])").count() == 0, path
    await web.goto("/ui/keys")
    await web.page.get_by_role("link", name=XSS).first.click()
    assert await page.locator("h1").inner_text() == XSS
    # the recorder's teardown asserts that no dialog (alert) ever opened


async def test_changes_without_the_csrf_token_are_refused(web: Browser) -> None:
    await web.sign_in()
    token = await web.csrf()
    post = web.page.request.post
    base = web.base
    form: dict[str, Any] = {"name": "csrf-probe", "models": "*"}
    missing = await post(f"{base}/ui/keys", form=form, max_redirects=0)
    assert missing.status == 403
    wrong = await post(f"{base}/ui/keys", form={**form, "csrf": "x" * 43}, max_redirects=0)
    assert wrong.status == 403
    foreign = await post(
        f"{base}/ui/keys",
        form={**form, "csrf": token},
        headers={"Origin": "https://evil.example"},
        max_redirects=0,
    )
    assert foreign.status == 403
    for path in (
        f"/ui/deployments/{VAULTED}/cooldown/end",
        "/ui/secrets",
        "/ui/routes/delete",
        "/ui/signout",
    ):
        refused = await post(f"{base}{path}", form={"name": "x"}, max_redirects=0)
        assert refused.status == 403, path
    keys = (await web.stack.admin("GET", "/keys?q=csrf-probe")).json()
    assert keys["total"] == 0
    # Positive control: the same request with the page's token goes through.
    ok = await post(f"{base}/ui/keys", form={**form, "csrf": token}, max_redirects=0)
    assert ok.status == 200
    assert "Copy the key now" in await ok.text()


async def test_session_cookie_and_sign_out(web: Browser) -> None:
    await web.sign_in()
    cookies = await web.page.context.cookies()
    session = next(c for c in cookies if c["name"] == "sy_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/ui"
    assert session["expires"] == -1  # kept while the server keeps the session
    stolen = session["value"]
    await web.page.get_by_role("button", name="Sign out").click()
    await web.page.wait_for_url("**/ui/signin")
    # The old cookie is dead on the server, not just deleted in this browser.
    replay = await web.page.request.get(
        f"{web.base}/ui/api/overview", headers={"Cookie": f"sy_session={stolen}"}
    )
    assert replay.status == 401
    await web.goto("/ui/keys")
    assert "/ui/signin" in web.page.url
    # A wrong token is refused, and the attempt is audited.
    await web.page.get_by_label("Your name").fill("Mallory")
    await web.page.get_by_label("Admin token").fill("sy-admin-wrong")
    await web.page.get_by_role("button", name="Sign in").click()
    assert "not valid" in await web.page.locator(".flash.error").inner_text()
    audit = (await web.stack.admin("GET", "/audit?kind=session")).json()["entries"]
    assert any(e["actor"] == "Mallory" and not e["ok"] for e in audit)
    # Wrong tokens as fast as a client can send them would push real entries out of the
    # audit log: past ten per address, they are refused unrecorded; the right token still works.
    form = {"name": "Flood", "token": "sy-admin-wrong"}
    origin = {"Origin": web.base}
    statuses = [
        (await web.page.request.post(f"{web.base}/ui/signin", form=form, headers=origin)).status
        for _ in range(14)
    ]
    assert statuses.count(401) == 9, statuses  # Mallory's was the first of ten
    assert statuses[-1] == 429, statuses
    flooded = (await web.stack.admin("GET", "/audit?kind=session&q=Flood")).json()
    assert flooded["total"] == 9, flooded
    await web.sign_in()
    assert "/ui/signin" not in web.page.url


async def test_the_canary_secret_never_reaches_the_browser(web: Browser) -> None:
    """Store the canary through the UI (again), use it, visit everything: no response the
    browser receives holds it (checked here and by the recorder on every test)."""
    await web.sign_in()
    page = web.page
    await web.goto("/ui/secrets")
    await page.get_by_label("Name", exact=True).fill("vault-key")
    await page.get_by_label("Value", exact=True).fill(CANARY)
    await page.get_by_role("button", name="Store").click()
    await page.wait_for_url("**/ui/secrets")
    row = page.locator("tr", has_text="vault-key")
    await row.get_by_label("New value for vault-key").fill(CANARY)
    await row.get_by_role("button", name="Rotate").click()
    await page.wait_for_url("**/ui/secrets")
    await web.goto("/ui/queues")
    card = page.locator(f'[data-dep="{VAULTED}"]')
    await card.get_by_role("button", name="Send a test request").click()
    await card.locator("[data-status]").wait_for(timeout=30_000)
    # A LiteLLM config with a literal key: previewed and applied, never echoed back.
    await web.goto("/ui/import")
    config = (
        "model_list:\n"
        "  - model_name: imported-chat\n"
        "    litellm_params:\n"
        f"      model: openai/echo\n      api_base: {web.stack.tail_url}/v1\n"
        f"      api_key: {LITERAL_KEY}\n"
    )
    await page.get_by_label("Or paste it").fill(config)
    await page.get_by_role("button", name="Preview").click()
    await page.wait_for_selector("text=What changes")
    preview = await page.content()
    assert "imported-chat" in preview
    assert LITERAL_KEY not in preview
    await web.shot("import-preview")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url("**/ui/routes")
    # A key pasted as a provider's secret name, with another field wrong: the form comes back
    # for the other field, without the key in it.
    await web.goto("/ui/providers/edit")
    await page.get_by_label("Name", exact=True).fill("pasted")
    await page.get_by_label("Secret name").fill(LITERAL_KEY)
    await page.get_by_label("Concurrency").fill("many")
    await page.get_by_role("button", name="Save provider").click()
    await page.locator("[data-error-for=secret]").wait_for()
    assert "looks like an API key" in await page.locator("[data-error-for=secret]").inner_text()
    assert LITERAL_KEY not in await page.content()
    # Nor a URL with a key in its query.
    await page.get_by_label("Secret name").fill("")
    await page.get_by_label("Concurrency").fill("4")
    await page.get_by_label("Base URL").fill(f"https://h.example/v1?api_key={LITERAL_KEY}")
    await page.get_by_role("button", name="Save provider").click()
    await page.locator("[data-error-for=api_base]").wait_for()
    assert "carries a credential" in await page.locator("[data-error-for=api_base]").inner_text()
    assert LITERAL_KEY not in await page.content()
    for path in (
        "/ui/",
        "/ui/secrets",
        "/ui/routes",
        "/ui/providers/edit?name=fake-vault",
        "/ui/audit",
        "/ui/api/overview",
        "/ui/api/history",
        "/ui/spend.csv?by=key",
    ):
        response = await web.page.request.get(f"{web.base}{path}")
        body = await response.body()
        assert response.status == 200, path
        assert CANARY.encode() not in body, path
        assert LITERAL_KEY.encode() not in body, path
    await web.recorder.settle()
    seen = b"".join(body for _, body in web.recorder.bodies)
    assert b"vault-key" in seen  # the recorder did see the pages
    assert CANARY.encode() not in seen
    assert LITERAL_KEY.encode() not in seen
