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
