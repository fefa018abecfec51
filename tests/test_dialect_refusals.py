"""What a dialect translation cannot carry is refused, not dropped: end to end on the session
stack, whose ``gpt-4o-mini`` route has one deployment, of kind ``openai-compatible``, which
translates Anthropic Messages to chat completions.

Anthropic's MCP connector (``mcp_servers``) gives the model tools that Anthropic's servers
call; dropped, the model would answer without them and the client could not tell.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import pytest
from anthropic.types.shared import ErrorResponse

from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

MCP_SERVER = {"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}


@pytest.fixture
def client(stack: Stack) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=stack.tail_url, api_key=stack.api_key, max_retries=0)
    try:
        yield sdk
    finally:
        sdk.close()


def test_mcp_servers_on_a_translating_route_is_a_400_in_anthropics_shape(
    client: anthropic.Anthropic, upstream: FakeOpenAI
) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.messages.create(
            model="gpt-4o-mini",
            max_tokens=16,
            messages=[{"role": "user", "content": f"list the tools {marker}"}],
            mcp_servers=[MCP_SERVER],  # type: ignore[list-item]
            betas=["mcp-client-2025-04-04"],
        )
    assert caught.value.status_code == 400
    body = ErrorResponse.model_validate(caught.value.body)
    assert body.error.type == "invalid_request_error"
    assert body.error.message.startswith("`mcp_servers` is not supported for this model")
    assert "speaks Anthropic's Messages API natively" in body.error.message
    assert not [c for c in upstream.calls if marker in str(c.body.get("messages"))]
