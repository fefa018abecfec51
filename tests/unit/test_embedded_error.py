"""The provider's sentence out of litellm's wrapping: an explorer's client read
``AnthropicException - b'{"type": "error", ...}'`` (a Python bytes repr of the whole answer)."""

from __future__ import annotations

import pytest

from switchyard.workers.modelproxy.providers.embedded_error import provider_error

pytestmark = pytest.mark.unit

ANTHROPIC = (
    """AnthropicException - b'{"type": "error", "error": {"type": "invalid_request_error","""
    """ "message": "max_tokens: Input should be greater than or equal to 1 (it\\'s 0)"}}'"""
)


@pytest.mark.parametrize(
    ("text", "message", "param"),
    [
        (ANTHROPIC, "max_tokens: Input should be greater than or equal to 1 (it's 0)", None),
        (
            'OpenAIException - {"error": {"message": "bad role", "type": "invalid_request_error",'
            ' "param": "messages[0].role", "code": null}}',
            "bad role",
            "messages[0].role",
        ),
        # Nothing embedded: the text, without litellm's tag.
        ("AnthropicException - overloaded, try later", "overloaded, try later", None),
        (
            "Unmapped LLM provider for this endpoint",
            "Unmapped LLM provider for this endpoint",
            None,
        ),
        # JSON that is not an error, or an error without a message: left as it was.
        ('VertexException - {"detail": "x"}', '{"detail": "x"}', None),
        ('XException - {"error": {"message": ""}}', '{"error": {"message": ""}}', None),
        ("AnthropicException - b'{not json}'", "b'{not json}'", None),
    ],
)
def test_the_providers_own_message_is_what_a_client_reads(
    text: str, message: str, param: str | None
) -> None:
    assert provider_error(text) == (message, param)
