"""What the HTTP edges answer a newcomer's mistakes, on the session stack."""

from __future__ import annotations

import httpx
import pytest

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
