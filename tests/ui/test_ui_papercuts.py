"""A newcomer's papercuts in the admin web app, in a real browser against a real stack."""

from __future__ import annotations

import pytest

from tests.ui.conftest import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_key_created_under_a_name_in_use_says_which_keys_share_it(web: Browser) -> None:
    first = await web.stack.admin("POST", "/keys", {"name": "shared-name"})
    assert first.status_code == 201, first.text
    first_id = first.json()["record"]["id"]
    await web.sign_in()
    await web.goto("/ui/keys/new")
    await web.page.get_by_label("Name").fill("shared-name")
    await web.page.get_by_role("button", name="Create key").click()
    await web.page.wait_for_selector("[data-new-key]")
    said = await web.page.locator(".flash.warn").all_inner_texts()
    assert any(f"Another key is named `shared-name` too ({first_id})" in s for s in said), said
    await web.shot("key-created-namesake")


async def test_the_demo_model_is_labelled_built_in_not_switchyard_yaml(web: Browser) -> None:
    await web.sign_in()
    await web.goto("/ui/routes")
    for section in ("Routes", "Providers"):
        card = web.page.locator("section.card", has_text=section)
        demo = card.locator("tbody tr", has=web.page.locator("td strong", has_text="demo"))
        assert await demo.locator(".badge").first.inner_text() == "built-in"
    chat = web.page.locator("tbody tr", has=web.page.locator("td strong", has_text="chat"))
    assert await chat.locator(".badge").first.inner_text() == "switchyard.yaml"
    await web.shot("routes-built-in")
    await web.goto("/ui/routes/edit?alias=demo")
    said = await web.page.locator(".flash.info").inner_text()
    assert "built-in offline demo route, not in switchyard.yaml" in said


async def test_deleting_a_key_says_which_route_only_its_fallback_will_answer(web: Browser) -> None:
    """The confirmation called such a route one whose "other deployments and fallbacks answer
    instead", though its own model is no longer served."""
    stack = web.stack
    stored = await stack.admin("PUT", "/secrets/fb-key", {"value": "sk-fb-0000", "provider": "x"})
    assert stored.status_code == 200, stored.text
    provider = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1"}
    provider["secret"] = "fb-key"
    assert (await stack.admin("PUT", "/providers/fb-prov", provider)).status_code == 200
    main = {"deployments": [{"provider": "fb-prov", "model": "m"}], "fallbacks": ["demo"]}
    assert (await stack.admin("PUT", "/routes/fb-main", main)).status_code == 200
    try:
        await web.sign_in()
        await web.goto("/ui/secrets/fb-key/delete")
        said = await web.page.locator(".flash.error").inner_text()
        assert "fb-main loses all its own deployments: only its fallback demo will answer" in said
        assert "Its one version is deleted" in await web.page.locator("main").inner_text()
        await web.shot("secret-delete-fallback-only")
    finally:
        await stack.admin("DELETE", "/routes/fb-main")
        await stack.admin("DELETE", "/providers/fb-prov")
        await stack.admin("DELETE", "/secrets/fb-key?force=true")
