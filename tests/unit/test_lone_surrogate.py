"""A body with a lone UTF-16 surrogate escape is refused for what it is.

An explorer sent ``"content":"\\ud800"`` (the escape literally in the body) and was told
"Input data was truncated", msgspec's words for a high surrogate with no low half after it.
"""

from __future__ import annotations

import pytest

from switchyard.errors import InvalidRequest
from switchyard.schemas.openai import error_body, probe


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            rb'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\ud800"}]}',
            "messages[0].content",
        ),
        (
            rb'{"model":"m","messages":[{"role":"user","content":"ok"},'
            rb'{"role":"user","content":"a\udc00b"}]}',
            "messages[1].content",
        ),
        (rb'{"model":"m","messages":[{"role":"user","\ud800":"x"}]}', "messages[0]"),
    ],
)
def test_a_lone_surrogate_is_named_with_its_field(body: bytes, where: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        probe("chat", body)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "invalid_json", "messages")
    assert "truncated" not in error.message
    assert "lone UTF-16 surrogate" in error.message
    assert f"'{where}'" in error.message


def test_a_surrogate_pair_is_text_and_a_truncated_body_still_says_so() -> None:
    assert probe("chat", rb'{"model":"m","messages":[{"role":"user","content":"\ud83d\ude00"}]}')
    with pytest.raises(InvalidRequest, match="truncated"):
        probe("chat", rb'{"model":"m","messages":[{"role":"user","content":"x"')


def test_the_answer_can_be_encoded() -> None:
    """A key with a lone surrogate is not echoed: msgspec could not encode the answer."""
    with pytest.raises(InvalidRequest) as caught:
        probe("chat", rb'{"model":"m","messages":[{"role":"user","\ud800":"x"}]}')
    assert error_body(caught.value)
