"""The request's id reaches an OpenAI-compatible provider as ``X-Client-Request-Id``: an SRE
matching a slow or failed request with the provider's own logs had nothing to match on (the
direct path sent no id). The session stack and its fake OpenAI-compatible provider."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_the_provider_is_sent_the_request_id(
    stack: Stack, upstream: FakeOpenAI, stream: bool
) -> None:
    text = f"s10h request id {'streamed' if stream else 'whole'}"
    body = {
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": "oncall-s10h"}
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
        answer = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    assert request_id.startswith("oncall-s10h.")
    (call,) = [c for c in upstream.calls_for("echo") if text in json.dumps(c.body)]
    sent = {name.lower(): value for name, value in call.headers.items()}
    assert sent.get("x-client-request-id") == request_id
