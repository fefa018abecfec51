"""What an operator does in the admin web app, end to end in a real browser against a real stack."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest

from tests.ui.conftest import CANARY, COOLING, HELD, VAULTED, Browser
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _card(web: Browser, deployment: str) -> Any:
    return web.page.locator(f'[data-dep="{deployment}"]')


async def test_put_a_secret_and_see_the_provider_that_uses_it_answer(web: Browser) -> None:
    # The package's tests share one stack, and test_ui_security's canary test stores vault-key
    # too: run after it, this test saw the secret stored and no warning. It starts from an
    # operator's first visit, with the secret not stored (a full delete: versions start at 1).
    gone = await web.stack.admin("DELETE", "/secrets/vault-key?force=true")
    assert gone.status_code in (200, 404), gone.text
    await web.sign_in()
    await web.goto("/ui/secrets")
    warning = web.page.locator(".flash.warn")
    assert "vault-key" in await warning.inner_text()  # fake-vault refers to it; not stored yet
    await web.page.get_by_label("Name", exact=True).fill("vault-key")
    await web.page.get_by_label("Label (optional)").fill("fake provider")
    await web.page.get_by_label("Value", exact=True).fill(CANARY)
    await web.page.get_by_role("button", name="Store").click()
    await web.page.wait_for_url("**/ui/secrets")
    assert "Stored vault-key (version 1)" in await web.page.locator(".flash.ok").inner_text()
    row = web.page.locator("tr", has_text="vault-key")
    assert "fake-vault" in await row.inner_text()  # which providers use it
    assert "Ada Admin (ui)" in await row.inner_text()  # who changed it, as the service saw it
    assert await web.page.locator(".flash.warn").count() == 0
    await web.shot("secrets-stored")

    await web.goto("/ui/queues")
    card = _card(web, VAULTED)
    await card.get_by_role("button", name="Send a test request").click()
    result = card.locator("[data-f=test-result]")
    await result.and_(web.page.locator("[data-status]")).wait_for(timeout=30_000)
    assert await result.get_attribute("data-status") == "200", await result.inner_text()
    assert " ms" in await result.inner_text()
    # Deleting it would leave `vaulted` nothing to answer with: the confirmation says so.
    await web.goto("/ui/secrets/vault-key/delete")
    warning_text = await web.page.locator(".flash.error").inner_text()
    assert "breaks provider fake-vault" in warning_text
    assert "The route vaulted will fail" in warning_text


async def test_create_a_key_use_it_with_the_sdk_and_revoke_it(web: Browser) -> None:
    await web.sign_in()
    await web.goto("/ui/keys/new")
    page = web.page
    await page.get_by_label("Name").fill("sdk-app")
    await page.get_by_label("Team").fill("mobile")
    await page.get_by_label("Models").fill("chat")
    await page.get_by_label("Requests per minute").fill("600")
    await page.get_by_label("Budget (USD)").fill("25")
    await page.get_by_role("button", name="Create key").click()
    await page.wait_for_selector("[data-new-key]")
    api_key = await page.locator("[data-new-key]").input_value()
    assert api_key.startswith("sk-sy-")
    await web.shot("key-created")

    client = openai.AsyncOpenAI(base_url=f"{web.stack.tail_url}/v1", api_key=api_key)
    try:
        reply = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello from the UI"}]
        )
        assert reply.choices[0].message.content == "echo: hello from the UI"
        with pytest.raises(openai.PermissionDeniedError):  # only the models it was given
            await client.chat.completions.create(
                model="held", messages=[{"role": "user", "content": "x"}]
            )

        await page.get_by_role("link", name="Done: see the key").click()
        await page.wait_for_selector("text=Usage, last 30 days")
        # One click only arms the button (no dialog): the key still works until the second.
        await page.get_by_role("button", name="Revoke").click()
        armed = page.get_by_role("button", name="Revoke sdk-app? Click again")
        await armed.wait_for()
        await web.shot("key-revoke-armed")
        reply = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "not yet"}]
        )
        assert reply.choices[0].message.content == "echo: not yet"
        await armed.click()
        revoked_at = time.monotonic()
        await page.wait_for_selector(".badge.bad >> text=revoked")
        while True:
            try:
                await client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "still?"}]
                )
            except openai.AuthenticationError:
                break
            assert time.monotonic() - revoked_at < 1.0, "the key still worked a second later"
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    await web.shot("key-revoked")
    await web.goto("/ui/audit?kind=key")
    log = await web.page.locator("table.data").inner_text()
    for seen in ("key.revoke", "key.create", "Ada Admin"):
        assert seen in log


async def test_a_free_models_key_charts_its_requests(web: Browser) -> None:
    """A key whose traffic costs nothing (the demo model has no price) charts requests per
    day, not an empty spend chart; the chart is drawn once."""
    key, record = await web.stack.new_key("free-tier", models=["demo"])
    async with httpx.AsyncClient(timeout=30) as http:
        sent = 0
        deadline = time.monotonic() + 10
        while sent < 3:  # a new key reaches the tail's key ring through KV, not at once
            resp = await http.post(
                f"{web.stack.tail_url}/v1/chat/completions",
                json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            if resp.status_code == 401 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            assert resp.status_code == 200, resp.text
            sent += 1
    await web.sign_in()
    chart = web.page.locator("svg.bars")
    deadline = time.monotonic() + 15
    while True:  # usage is counted by the accounting worker, a moment after the answers
        await web.goto(f"/ui/keys/{record.id}")
        if await web.page.locator("table.data tbody tr:not(.empty)").count():
            break
        assert time.monotonic() < deadline, "the key's usage never showed"
        await asyncio.sleep(0.5)
    assert await chart.get_attribute("aria-label") == "Requests per day, last 30 days"
    assert await chart.get_attribute("data-value") == "requests"
    heights = [
        float(h or 0)
        for h in await chart.locator("rect").evaluate_all(
            "(bars) => bars.map((b) => b.getAttribute('height'))"
        )
    ]
    assert len(heights) == 30  # one bar a day, drawn once
    assert max(heights) > 0
    assert await chart.locator("text").first.text_content() == "3 requests"  # the axis
    await web.shot("key-free-requests")


async def test_an_invalid_route_is_refused_at_the_field(web: Browser) -> None:
    await web.sign_in()
    page = web.page
    await web.goto("/ui/routes/edit")
    await page.get_by_label("Model alias").fill("ui-route")
    await page.get_by_label("Provider of deployment 1").select_option("fake")
    await page.get_by_label("Upstream model of deployment 1").fill("echo")
    await page.get_by_label("Weight of deployment 1").fill("-1")
    await page.get_by_role("button", name="Save route").click()
    error = page.locator('[data-error-for="deployments-0-weight"]')
    await error.wait_for()
    assert "finite number from 0" in await error.inner_text()
    assert await page.get_by_label("Weight of deployment 1").get_attribute("aria-invalid") == "true"
    await web.shot("route-invalid")

    # The control service's own check (an unknown fallback), placed at its field too.
    await page.get_by_label("Weight of deployment 1").fill("1")
    await page.get_by_label("Fallback aliases").fill("no-such-route")
    await page.get_by_role("button", name="Save route").click()
    error = page.locator('[data-error-for="fallbacks"]')
    await error.wait_for()
    assert "unknown alias `no-such-route`" in await error.inner_text()

    await page.get_by_label("Fallback aliases").fill("chat")
    await page.get_by_role("button", name="Save route").click()
    await page.wait_for_url("**/ui/routes")
    assert "Saved route ui-route" in await page.locator(".flash.ok").inner_text()

    # Someone else changes the route while this form is open: a 409, explained, with a reload.
    await web.goto("/ui/routes/edit?alias=ui-route")
    other = {"deployments": [{"provider": "fake", "model": "echo", "weight": 2}]}
    assert (await web.stack.admin("PUT", "/routes/ui-route", other)).status_code == 200
    await page.get_by_label("Description").fill("mine")
    async with page.expect_response(lambda r: r.url.endswith("/routes/save")) as saved:
        await page.get_by_role("button", name="Save route").click()
    assert (await saved.value).status == 409
    banner = page.locator('[data-error-for="form"]')
    assert "changed by someone else" in await banner.inner_text()
    await banner.get_by_role("link", name="Reload").click()
    assert await page.get_by_label("Weight of deployment 1").input_value() == "2.0"


async def test_a_queue_fills_and_drains_live(web: Browser, upstream: FakeOpenAI) -> None:
    upstream.set_mode("held", "gate:ui-held")
    await web.sign_in()
    await web.goto("/ui/queues")
    card = _card(web, HELD)
    waiting, in_flight = card.locator("[data-f=waiting]"), card.locator("[data-f=in_flight]")
    assert await waiting.inner_text() == "0"
    async with httpx.AsyncClient(timeout=60) as http:
        requests = web.chats(http, "held", 6, "q")
        try:
            # No reload: the page follows the stream.
            await web.page.wait_for_function(
                "([w, f]) => w.textContent === '5' && f.textContent === '1'",
                arg=[await waiting.element_handle(), await in_flight.element_handle()],
                timeout=15_000,
            )
            # Concurrency 1 is saturated: the rest wait in the fair queue, shown by tenant.
            held = card.locator("[data-held] tbody")
            await web.page.wait_for_function(
                "(b) => b.textContent.includes('default')",
                arg=await held.element_handle(),
                timeout=15_000,
            )
            assert int(await card.locator("[data-f=held]").inner_text()) >= 1
            assert await card.locator("[data-f=saturated]").is_visible()
            await web.page.wait_for_timeout(2500)  # a few points on the chart
            await web.shot("queues-held")
        finally:
            upstream.open_gate("ui-held")
        answers = await asyncio.gather(*requests)
    assert [r.status_code for r in answers] == [200] * 6
    await web.page.wait_for_function(
        "([w, f]) => w.textContent === '0' && f.textContent === '0'",
        arg=[await waiting.element_handle(), await in_flight.element_handle()],
        timeout=15_000,
    )
    assert await card.locator("[data-held]").is_hidden()  # shown only while requests are held


async def test_end_a_cooldown(web: Browser, upstream: FakeOpenAI) -> None:
    upstream.set_mode("cool", "status:500")
    stack = web.stack
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={"model": "cool", "messages": [{"role": "user", "content": "fail"}]},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
    assert resp.status_code == 502, resp.text
    upstream.set_mode("cool", "echo")
    await web.sign_in()
    await web.goto("/ui/queues")
    card = _card(web, COOLING)
    await card.locator(".badge.warn", has_text="cooling down").wait_for()
    await card.scroll_into_view_if_needed()
    await web.shot("queues-cooldown")
    await card.get_by_role("button", name="End cooldown").click()
    await web.page.wait_for_url("**/ui/queues")
    assert "Cooldown of" in await web.page.locator(".flash.ok").inner_text()
    await _card(web, COOLING).locator(".badge.ok", has_text="ready").wait_for()
    deployments = (await stack.admin("GET", "/deployments")).json()["deployments"]
    assert next(d for d in deployments if d["id"] == COOLING)["cooldown"] is None
    await _card(web, COOLING).get_by_role("button", name="Send a test request").click()
    result = _card(web, COOLING).locator("[data-f=test-result]")
    await result.and_(web.page.locator("[data-status]")).wait_for(timeout=30_000)
    assert await result.get_attribute("data-status") == "200"
