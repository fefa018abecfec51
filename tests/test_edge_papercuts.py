"""What the HTTP edges answer a newcomer's mistakes, on the session stack."""

from __future__ import annotations

import httpx
import pytest

import switchyard
from tests.stacks import Stack

pytestmark = pytest.mark.integration

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_key_without_bearer_is_refused_saying_how_to_send_it(stack: Stack) -> None:
    """`Authorization: sk-sy-...` was answered "You didn't provide an API key"."""
    async with httpx.AsyncClient(timeout=30) as http:
        for path in ("/v1/chat/completions", "/v1/models"):
            method = "POST" if path.endswith("completions") else "GET"
            bare = await http.request(
                method,
                f"{stack.tail_url}{path}",
                json=CHAT if method == "POST" else None,
                headers={"Authorization": stack.api_key},
            )
            assert bare.status_code == 401, bare.text
            error = bare.json()["error"]
            assert error["code"] == "missing_api_key"
            assert "without the `Bearer ` scheme" in error["message"]
            assert stack.api_key not in bare.text
        sent = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        assert sent.status_code == 200, sent.text


async def test_the_admin_api_asked_of_the_tail_says_the_gateway_serves_it(stack: Stack) -> None:
    """`/admin/v1/...` on the tail answered `Unknown path` and nothing more."""
    async with httpx.AsyncClient(timeout=30) as http:
        wrong = await http.get(f"{stack.tail_url}/admin/v1/keys", headers=stack.admin_headers())
        assert wrong.status_code == 404, wrong.text
        error = wrong.json()["error"]
        assert error["code"] == "not_found"
        port = stack.settings.ingress.gateway.port
        assert error["message"] == (
            f"Unknown path /admin/v1/keys: the admin API is served by the gateway (port {port}),"
            " not by this edge (the tail)"
        )
        there = await http.get(f"{stack.gateway_url}/admin/v1/keys", headers=stack.admin_headers())
        assert there.status_code == 200, there.text
        other = await http.get(f"{stack.tail_url}/v2/nothing")
        assert other.json()["error"]["message"] == "Unknown path /v2/nothing"


@pytest.mark.parametrize("value", ["abc", "0", "-3", "inf"])
async def test_an_unreadable_request_timeout_is_a_400_naming_it(stack: Stack, value: str) -> None:
    """`X-Request-Timeout: abc` ran under the default deadline: a typo of our own header was
    never heard of (the bus answers a bad `Sy-Deadline` with 400)."""
    async with httpx.AsyncClient(timeout=30) as http:
        sent = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": value},
        )
    assert sent.status_code == 400, sent.text
    error = sent.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_header", "X-Request-Timeout")


async def test_the_served_openapi_names_this_version(stack: Stack) -> None:
    """Both edges said 0.1.0 (FastAPI's default) while the build was 0.2.0."""
    async with httpx.AsyncClient(timeout=30) as http:
        for url in (stack.tail_url, stack.gateway_url):
            info = (await http.get(f"{url}/openapi.json")).json()["info"]
            assert info["version"] == switchyard.__version__
