"""Every page renders for a signed-in admin (and is photographed); none works without a session."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time

import httpx
import pytest

from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack
from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGES = {
    "overview": ("/ui/", "Overview"),
    "queues": ("/ui/queues", "Queues"),
    "secrets": ("/ui/secrets", "Secrets"),
    "routes": ("/ui/routes", "Providers & routes"),
    "route-edit": ("/ui/routes/edit?alias=chat", "Route chat"),
    "provider-edit": ("/ui/providers/edit", "New provider"),
    "import": ("/ui/import", "Import a LiteLLM config"),
    "keys": ("/ui/keys", "Client keys"),
    "key": ("/ui/keys/{key}", "checkout-api"),
    "key-new": ("/ui/keys/new", "New client key"),
    "spend": ("/ui/spend?by=team", "Spend"),
    "spend-keys": ("/ui/spend?by=key", "Spend"),
    "spend-deployments": ("/ui/spend?by=deployment", "Spend"),
    "audit": ("/ui/audit", "Audit log"),
    "batches-page": ("/ui/batches", "Batches"),
    "sessions-page": ("/ui/sessions", "Sessions"),
}


async def _traffic(stack: Stack) -> None:
    """Some keys in teams, each with a few requests, so spend and usage have something to show."""
    teams = {"checkout-api": "payments", "search-indexer": "search", "support-bot": "support"}
    async with httpx.AsyncClient(timeout=30) as http:
        for n, (name, team) in enumerate(teams.items()):
            key, _ = await stack.new_key(name, team=team, owner=f"{team}@example.com", rpm=600)
            for _ in range(50):  # a new key reaches the tail's key ring through KV, not at once
                models = await http.get(
                    f"{stack.tail_url}/v1/models", headers={"Authorization": f"Bearer {key}"}
                )
                if models.status_code != 401:
                    break
                await asyncio.sleep(0.1)
            for i in range(3 + 4 * n):
                resp = await http.post(
                    f"{stack.tail_url}/v1/chat/completions",
                    json={
                        "model": "chat",
                        "messages": [{"role": "user", "content": "w " * (40 * i)}],
                    },
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ranked = (await stack.admin("GET", "/spend/ranking?by=team&days=1")).json()
        if len(ranked["rows"]) >= len(teams):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"spend per team not recorded: {ranked}")


async def test_sign_in_then_every_page_renders(web: Browser) -> None:
    await _traffic(web.stack)
    await web.goto("/ui/signin")
    await web.shot("signin")
    await web.sign_in()
    keys = (await web.stack.admin("GET", "/keys?q=checkout-api")).json()["keys"]
    for name, (path, heading) in PAGES.items():
        response = await web.goto(path.format(key=keys[0]["id"]))
        assert response.status == 200, (path, await response.text())
        assert await web.page.locator("h1").inner_text() == heading
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        unlabelled = await web.page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter((el) => el.type !== 'hidden' && el.labels.length === 0)
                .map((el) => el.name || el.id)"""
        )
        assert unlabelled == [], (path, unlabelled)
        await web.page.wait_for_timeout(300)  # live pages: the first event has arrived
        if name == "overview":  # each process says when it last reported, live
            table = web.page.locator("[data-table=processes]")
            assert "Seen" in (await table.locator("thead").text_content() or "")
            seen = await table.locator("tbody tr td:nth-child(6)").all_inner_texts()
            assert seen, "no process row"
            assert all(re.fullmatch(r"\d+s ago", t) for t in seen), seen
        await web.shot(name)
    # The CSV export: each team's day with its requests and tokens, not only its cost.
    exported = await web.page.request.get(f"{web.stack.gateway_url}/ui/spend.csv?by=team&days=1")
    assert exported.status == 200
    rows = list(csv.DictReader(io.StringIO(await exported.text())))
    by_team = {r["team"]: r for r in rows}
    assert {t: int(by_team[t]["requests"]) for t in ("payments", "search", "support")} == {
        "payments": 3,
        "search": 7,
        "support": 11,
    }
    assert by_team["search"]["name"] == "search"
    assert int(by_team["search"]["prompt_tokens"]) > 0
    # By deployment: the provider account and model that served, each named.
    exported = await web.page.request.get(
        f"{web.stack.gateway_url}/ui/spend.csv?by=deployment&days=1"
    )
    assert exported.status == 200
    rows = list(csv.DictReader(io.StringIO(await exported.text())))
    echo = [r for r in rows if r["deployment"] == deployment_id("fake", "echo")]
    assert [(r["provider"], r["model"]) for r in echo] == [("fake", "echo")]
    assert int(echo[0]["requests"]) >= 3 + 7 + 11  # this test's (others may have sent some)
    assert float(echo[0]["cost_usd"]) > 0


async def test_no_page_or_call_works_without_a_session(ui_stack: Stack) -> None:
    paths = [p.format(key="key_0") for p, _ in PAGES.values()]
    paths += ["/ui/api/overview", "/ui/api/history", "/ui/spend.csv"]
    async with httpx.AsyncClient(base_url=ui_stack.gateway_url, timeout=10) as http:
        for path in paths:
            resp = await http.get(path)
            if path.startswith("/ui/api/"):
                assert resp.status_code == 401, path
            else:
                assert resp.status_code == 303, path
                assert resp.headers["location"].startswith("/ui/signin"), path
        for path in ("/ui/keys", "/ui/secrets", "/ui/routes/save", "/ui/signout"):
            resp = await http.post(path, data={"name": "x"})
            assert resp.status_code == 401, path
        # a made-up cookie is no session either
        resp = await http.get("/ui/keys", headers={"Cookie": "sy_session=forged"})
        assert resp.status_code == 303


async def test_keyboard_only(web: Browser) -> None:
    page = web.page
    await web.goto("/ui/signin")
    token = web.stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    await page.keyboard.type("Keyboard User")  # the name field has the focus
    await page.keyboard.press("Tab")
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await page.wait_for_url(web.base + "/ui/")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Switchyard"
    for _ in range(5):  # Overview, Queues, Secrets, Providers & routes, Keys
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Keys"
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/ui/keys")


async def test_the_api_docs_page_renders_with_no_internet(web: Browser) -> None:
    """``/docs`` loaded Swagger UI from a CDN: with no internet (none is needed at run time)
    the page stayed blank. Its files now come from the gateway itself."""
    asked: list[str] = []
    refused: list[str] = []
    web.page.on("request", lambda request: asked.append(request.url))
    web.page.on("console", lambda msg: refused.append(msg.text) if msg.type == "error" else None)
    response = await web.goto("/docs")
    # The same origin as the admin UI: its own strict policy, its one inline script by hash.
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "'sha256-" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    await web.page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "Switchyard gateway" in await web.page.inner_text(".swagger-ui .info .title")
    await web.page.wait_for_selector(".opblock", timeout=20_000)
    listed = await web.page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/chat/completions" in listed, listed
    elsewhere = [url for url in asked if not url.startswith(web.base)]
    assert elsewhere == [], elsewhere
    assert not [m for m in refused if "Content Security Policy" in m], refused
    await web.shot("api-docs")


async def test_long_unbroken_names_stay_inside_the_page(web: Browser) -> None:
    """A key named with 200 characters and no space widened the Keys table past its card (the
    page was 1,772 px wide in a 1,360 px window) and clipped its last columns."""
    name, team = "k" * 200, "t" * 120
    _, record = await web.stack.new_key(name, team=team, owner="o" * 150)
    await web.sign_in()
    pages = {"list": f"/ui/keys?q={name[:40]}", "key": f"/ui/keys/{record.id}"}
    for shot, path in (pages | {"spend": "/ui/spend?by=key"}).items():
        response = await web.goto(path)
        assert response.status == 200, path
        wide = await web.page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert wide[0] <= wide[1], (path, wide)
        await web.shot(f"long-names-{shot}")
