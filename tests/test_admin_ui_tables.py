"""The web app's route and provider editors on the session stack, driven over HTTP as a
browser's forms would, with a second admin changing the table through the API meanwhile."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration

PRICE = {"input_per_token": 0.000003, "output_per_token": 0.000012}
TIMEOUTS = {"first_token_s": 7.0, "stream_s": 70.0, "request_s": 77.0}


def _hidden_inputs(page: str) -> dict[str, str]:
    """The form's hidden fields (csrf, existing, digest, rows, alias or name)."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


async def _route(stack: Stack, alias: str) -> dict[str, Any]:
    got = await stack.admin("GET", f"/routes/{alias}")
    assert got.status_code == 200, got.text
    return dict(got.json())


async def test_changing_a_deployments_model_keeps_its_price_and_timeouts(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Price and timeouts were matched by (provider, model), so changing a row's upstream model
    saved them as null: its spend became $0 and budgets stopped counting it."""
    http, _ = signed_in
    deployments = [
        {"provider": "fake", "model": "hidden-a", "price": PRICE, "timeouts": TIMEOUTS},
        {"provider": "fake", "model": "hidden-c"},
    ]
    put = await stack.admin("PUT", "/routes/hidden-kept", {"deployments": deployments})
    assert put.status_code == 200, put.text
    try:
        form = await http.get("/ui/routes/edit?alias=hidden-kept")
        assert "Has its own price and timeouts" in re.sub(r"<[^>]+>", "", form.text)
        fields = _hidden_inputs(form.text) | {
            "description": "",
            "fallbacks": "",
            "deployments-0-provider": "fake",
            "deployments-0-model": "hidden-b",  # the changed upstream model
            "deployments-0-weight": "1",
            "deployments-1-provider": "fake",
            "deployments-1-model": "hidden-c",
            "deployments-1-weight": "1",
        }
        saved = await http.post("/ui/routes/save", data=fields)
        assert saved.status_code == 303, saved.text
        flash = re.sub(r"<[^>]+>", "", (await http.get(saved.headers["location"])).text)
        assert "fake/hidden-b kept the price and timeouts" in flash
        route = await _route(stack, "hidden-kept")
        first, second = route["deployments"]
        assert first["model"] == "hidden-b"
        assert first["price"] == PRICE
        assert first["timeouts"] == TIMEOUTS
        assert second["price"] is None  # not the other row's
        assert second["timeouts"] is None
    finally:
        await stack.admin("DELETE", "/routes/hidden-kept")


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page))


def _delete_form(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the page's delete form."""
    form = re.search(rf'<form method="post" action="{action}".*?</form>', page, re.S)
    assert form is not None, page
    return _hidden_inputs(form.group(0))


async def test_delete_from_a_stale_page_deletes_nothing(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Delete had no conflict check (Save has one): another admin's edit since the page was
    opened was deleted with the route or provider, without a word."""
    http, _ = signed_in
    provider = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:32931/v1"}
    route = {"deployments": [{"provider": "fake", "model": "stale-delete"}]}
    assert (await stack.admin("PUT", "/providers/stale-delete", provider)).status_code == 200
    assert (await stack.admin("PUT", "/routes/stale-delete", route)).status_code == 200
    try:
        route_page = (await http.get("/ui/routes/edit?alias=stale-delete")).text
        provider_page = (await http.get("/ui/providers/edit?name=stale-delete")).text
        theirs = {"deployments": [{"provider": "fake", "model": "stale-delete", "weight": 4}]}
        assert (await stack.admin("PUT", "/routes/stale-delete", theirs)).status_code == 200
        moved = provider | {"api_base": "http://127.0.0.1:32932/v1"}
        assert (await stack.admin("PUT", "/providers/stale-delete", moved)).status_code == 200

        refused = await http.post(
            "/ui/routes/delete", data=_delete_form(route_page, "/ui/routes/delete")
        )
        assert refused.status_code == 409, refused.text
        assert "Route stale-delete was changed by someone else" in _text(refused.text)
        assert "so it was not deleted" in _text(refused.text)
        assert (await _route(stack, "stale-delete"))["deployments"][0]["weight"] == 4
        # The page shows the current version; its Delete deletes it.
        deleted = await http.post(
            "/ui/routes/delete", data=_delete_form(refused.text, "/ui/routes/delete")
        )
        assert deleted.status_code == 303, deleted.text
        assert (await stack.admin("GET", "/routes/stale-delete")).status_code == 404

        action = "/ui/providers/delete"
        refused = await http.post(action, data=_delete_form(provider_page, action))
        assert refused.status_code == 409, refused.text
        assert "Provider stale-delete was changed by someone else" in _text(refused.text)
        assert "32932" in refused.text  # the current version
        assert "32932" in (await stack.admin("GET", "/providers")).text
        deleted = await http.post(action, data=_delete_form(refused.text, action))
        assert deleted.status_code == 303, deleted.text
        assert "stale-delete" not in (await stack.admin("GET", "/providers")).text
    finally:
        await stack.admin("DELETE", "/routes/stale-delete")
        await stack.admin("DELETE", "/providers/stale-delete")


async def test_saving_an_item_deleted_meanwhile_says_so_and_can_create_it_again(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """It said "changed by someone else" with a Reload that led to a generic 404 page."""
    http, _ = signed_in
    route = {"deployments": [{"provider": "fake", "model": "gone-save"}]}
    provider = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:32941/v1"}
    assert (await stack.admin("PUT", "/routes/gone-save", route)).status_code == 200
    assert (await stack.admin("PUT", "/providers/gone-save", provider)).status_code == 200
    try:
        route_fields = _hidden_inputs((await http.get("/ui/routes/edit?alias=gone-save")).text)
        provider_fields = _hidden_inputs((await http.get("/ui/providers/edit?name=gone-save")).text)
        assert (await stack.admin("DELETE", "/routes/gone-save")).status_code == 200
        assert (await stack.admin("DELETE", "/providers/gone-save")).status_code == 200

        route_fields |= {
            "description": "mine",
            "deployments-0-provider": "fake",
            "deployments-0-model": "gone-save",
            "deployments-0-weight": "2",
        }
        page = await http.post("/ui/routes/save", data=route_fields)
        assert page.status_code == 409, page.text
        text = _text(page.text)
        assert "Route gone-save was deleted by someone else" in text
        assert "changed by someone else" not in text
        assert 'href="/ui/routes">Go to the list</a>' in page.text
        assert "Reload" not in text
        again = route_fields | _hidden_inputs(page.text)
        assert again["existing"] == "0"  # saving again creates it, from the input kept
        assert re.search(r'<input id="f-alias" name="alias"[^>]*value="gone-save"', page.text)
        assert 'value="mine"' in page.text
        made = await http.post("/ui/routes/save", data=again)
        assert made.status_code == 303, made.text
        assert (await _route(stack, "gone-save"))["deployments"][0]["weight"] == 2

        provider_fields |= {"kind": "openai-compatible", "api_base": "http://127.0.0.1:32942/v1"}
        page = await http.post("/ui/providers/save", data=provider_fields)
        assert page.status_code == 409, page.text
        assert "Provider gone-save was deleted by someone else" in _text(page.text)
        assert 'href="/ui/routes">Go to the list</a>' in page.text
        assert _hidden_inputs(page.text)["existing"] == "0"
        assert "32942" in page.text
    finally:
        await stack.admin("DELETE", "/routes/gone-save")
        await stack.admin("DELETE", "/providers/gone-save")


async def test_the_delete_form_says_what_happens_to_waiting_requests(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """It said "(queued requests still finish)", but requests still waiting in a queue go back
    to the heads, which answer 404 model_not_found for a route that is gone; only running
    calls finish (docs/routing.md, removal bounces)."""
    http, _ = signed_in
    route = {"deployments": [{"provider": "fake", "model": "delete-words"}]}
    assert (await stack.admin("PUT", "/routes/delete-words", route)).status_code == 200
    try:
        text = _text((await http.get("/ui/routes/edit?alias=delete-words")).text)
        assert "queued requests still finish" not in text
        assert "Calls already running at a provider finish" in text
        assert "waiting in a queue for it are answered 404 model_not_found" in text
    finally:
        await stack.admin("DELETE", "/routes/delete-words")
