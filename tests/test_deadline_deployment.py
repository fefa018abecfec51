"""A 504 ``deadline_exceeded`` whose deadline passed while a deployment had the request names
that deployment (``x-switchyard-deployment``), as every other answer of a deployment does: an
SRE saw it missing on the 504s of a slow provider. The session stack, its fake provider."""

from __future__ import annotations

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_deadline_passed_at_the_provider_names_the_deployment(
    stack: Stack, stream: bool
) -> None:
    body = {"model": "slow", "stream": stream, "messages": [{"role": "user", "content": "late"}]}
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Timeout": "1"}
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        answer = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "deadline_exceeded"
    assert answer.headers.get("x-switchyard-deployment", "").startswith("fake--slow"), dict(
        answer.headers
    )
