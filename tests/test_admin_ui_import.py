"""The web app's LiteLLM import on the session stack, driven over HTTP as a browser's forms
would: Apply applies the preview on its own page (not another tab's later one), and the
preview says when a literal key would replace a secret already stored."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


def _config(route: str, port: int, key: str, host: str = "127.0.0.1") -> str:
    """A config of one route; its provider (and a literal key's secret) is named after
    ``host``."""
    return (
        "model_list:\n"
        f"  - model_name: {route}\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://{host}:{port}/v1\n"
        f"      api_key: {key}\n"
    )


def _preview_id(page: str) -> str:
    """The id the page's Apply form sends back."""
    form = re.search(r'<form method="post" action="/ui/import/apply".*?</form>', page, re.S)
    assert form is not None, page
    found = re.search(r'name="preview" value="([^"]+)"', form.group(0))
    assert found is not None, form.group(0)
    return found.group(1)


async def _routes(stack: Stack) -> dict[str, object]:
    return dict((await stack.admin("GET", "/routes")).json()["table"]["routes"])


async def test_apply_applies_the_preview_on_its_page_not_the_last_one_shown(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Two tabs: A previewed, then B (with a literal key); Apply on A's page applied B."""
    http, csrf = signed_in
    a = _config("stash-a-model", 32901, "os.environ/STASH_A_KEY")
    b = _config("stash-b-model", 32902, "sk-STASHB-literal-key-0123456789abcdef")
    page_a = await http.post("/ui/import/preview", data={"csrf": csrf, "config": a})
    page_b = await http.post("/ui/import/preview", data={"csrf": csrf, "config": b})
    assert page_a.status_code == page_b.status_code == 200
    assert _preview_id(page_a.text) != _preview_id(page_b.text)
    applied = await http.post(
        "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(page_a.text)}
    )
    assert applied.status_code == 303
    assert applied.headers["location"] == "/ui/routes"
    routes = await _routes(stack)
    assert "stash-a-model" in routes
    assert "stash-b-model" not in routes
    stored = [s["name"] for s in (await stack.admin("GET", "/secrets")).json()["secrets"]]
    assert not any("32902" in name or "stashb" in name.lower() for name in stored), stored
    # A preview is applied once; an Apply naming none (or one gone) applies nothing and says so.
    for form in ({"csrf": csrf, "preview": _preview_id(page_a.text)}, {"csrf": csrf}):
        again = await http.post("/ui/import/apply", data=form)
        assert again.status_code == 303
        assert again.headers["location"] == "/ui/import"
        shown = (await http.get("/ui/import")).text
        assert "Preview the config again" in shown
    assert "stash-b-model" not in await _routes(stack)
    # B's own Apply still applies B, once its page is shown again: A's apply replaced the
    # provider (same name, another port) that B's preview showed as new.
    applied = await http.post(
        "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(page_b.text)}
    )
    assert applied.status_code == 409, applied.text
    assert re.search(r"Nothing applied: provider \S+ changed since the preview", applied.text)
    applied = await http.post(
        "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(applied.text)}
    )
    assert applied.headers["location"] == "/ui/routes"
    assert "stash-b-model" in await _routes(stack)


async def test_the_preview_says_a_literal_key_replaces_a_stored_secret(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """It said only "stored for you on apply", so a pasted config silently replaced the key
    that live routes use."""
    http, csrf = signed_in
    first = _config(
        "replace-first-model", 32911, "sk-REPLACE-first-0123456789abcdef", host="127.0.0.31"
    )
    page = await http.post("/ui/import/preview", data={"csrf": csrf, "config": first})
    assert "stored for you on apply" in page.text
    assert "replaces the stored value" not in page.text
    applied = await http.post(
        "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(page.text)}
    )
    assert applied.headers["location"] == "/ui/routes"
    second = _config(
        "replace-second-model", 32911, "sk-REPLACE-second-0123456789abcdef", host="127.0.0.31"
    )
    page = await http.post("/ui/import/preview", data={"csrf": csrf, "config": second})
    text = re.sub(r"<[^>]+>", "", page.text)
    found = re.search(r"apply replaces the stored value of secret (\S+) \(([^)]*)\)", text)
    assert found is not None, text
    assert found.group(2) == "used now by routes replace-first-model"
    stored = [s["name"] for s in (await stack.admin("GET", "/secrets")).json()["secrets"]]
    assert found.group(1) in stored


async def test_apply_refuses_a_route_changed_since_its_preview(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Admin A previewed (the route shown as new), admin B then created it, A applied: B's route
    was replaced and the page said "Imported 1 routes"."""
    http, csrf = signed_in
    config = _config("stale-preview-model", 32921, "os.environ/STALE_PREVIEW_KEY")
    page = await http.post("/ui/import/preview", data={"csrf": csrf, "config": config})
    assert page.status_code == 200, page.text
    theirs = {"deployments": [{"provider": "fake", "model": "echo", "weight": 3}]}
    made = await stack.admin("PUT", "/routes/stale-preview-model", theirs)
    assert made.status_code == 200, made.text
    applied = await http.post(
        "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(page.text)}
    )
    assert applied.status_code == 409, applied.text
    text = re.sub(r"<[^>]+>", "", applied.text)
    assert "Nothing applied: route stale-preview-model changed since the preview" in text
    assert "replaces the current one" in text  # shown again against the table as it is now
    kept = (await _routes(stack))["stale-preview-model"]
    assert kept["deployments"][0]["weight"] == 3  # type: ignore[index]
    # The preview shown again can be applied: the admin has now seen what it replaces.
    again = await http.post(
        "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(applied.text)}
    )
    assert again.headers["location"] == "/ui/routes"
    replaced = (await _routes(stack))["stale-preview-model"]
    assert replaced["deployments"][0]["provider"] != "fake"  # type: ignore[index]
    await stack.admin("DELETE", "/routes/stale-preview-model")


async def test_each_key_an_import_stores_is_audited_as_a_secret_change(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """An auditor's find: the web app's import replaced a stored provider key with no
    ``secret.*`` entry (the CLI's import writes ``secret.put``), only ``import.litellm``."""
    http, csrf = signed_in
    for n, key in enumerate(("sk-AUDITED-first-0123456789abcdef", "sk-AUDITED-next-0123456789ab")):
        config = _config(f"audited-{n}-model", 32921, key, host="127.0.0.41")
        page = await http.post("/ui/import/preview", data={"csrf": csrf, "config": config})
        applied = await http.post(
            "/ui/import/apply", data={"csrf": csrf, "preview": _preview_id(page.text)}
        )
        assert applied.headers["location"] == "/ui/routes", applied.text
    table = (await stack.admin("GET", "/routes")).json()["table"]
    provider = table["routes"]["audited-1-model"]["deployments"][0]["provider"]
    secret = table["providers"][provider]["secret"]
    async with asyncio.timeout(10):
        while True:
            entries = (await stack.admin("GET", f"/audit?kind=secret&q={secret}")).json()
            puts = [e for e in entries["entries"] if e["target"] == secret]
            if len(puts) >= 2:
                break
            await asyncio.sleep(0.1)
    assert [(e["action"], e["via"], e["detail"]) for e in puts] == [
        ("secret.put", "ui", "version 2, from an import"),
        ("secret.put", "ui", "version 1, from an import"),
    ]
    assert not any("AUDITED" in e["detail"] for e in entries["entries"])
