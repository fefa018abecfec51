"""A body with a lone UTF-16 surrogate escape is refused for what it is.

An explorer sent ``"content":"\\ud800"`` (the escape literally in the body) and was told
"Input data was truncated", msgspec's words for a high surrogate with no low half after it.
"""

from __future__ import annotations

import pytest

from switchyard.errors import InvalidRequest
from switchyard.schemas import bad_json
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


@pytest.mark.parametrize(
    ("body", "at"),
    [
        (rb'{"a":"\ud83d\ude00"}', None),  # a pair: an emoji
        (rb'{"a":"\\ud800"}', None),  # an escaped backslash, then the text "ud800"
        (rb'{"a":"\\\ud800"}', 8),  # an escaped backslash, then a lone high half
        (rb'{"a":"x\udc00"}', 7),  # a low half alone
        (rb'{"a":"\ud800\ud800\udc00"}', 6),  # a high half followed by a pair
        (rb'{"a":"\uD83D"}', 6),  # upper-case hex
    ],
)
def test_the_scan_finds_only_lone_halves(body: bytes, at: int | None) -> None:
    assert bad_json.lone_surrogate_at(body) == at


def test_a_large_body_is_named_by_offset_not_re_read() -> None:
    """A reviewer measured a re-read of a 4 MiB body at 2.5 s of the edge's loop: past
    NAMED_UP_TO bytes the body is not re-read, and the offset names the place."""
    filler = "x" * (bad_json.NAMED_UP_TO + 10)
    body = ('{"model":"m","messages":[{"role":"user","content":"' + filler + '"},').encode()
    body += rb'{"role":"user","content":"\ud800"}]}'
    with pytest.raises(InvalidRequest) as refused:
        probe("chat", body)
    at = body.index(rb"\ud800")
    assert f"a string at byte {at} has an invalid \\u escape" in refused.value.message
    assert refused.value.param is None


def test_the_admin_api_and_batch_lines_say_the_same() -> None:
    """The admin API's own reading of a body, and a Batch input line, said msgspec's
    "Input data was truncated" too."""
    from switchyard.admin.bodies import decode
    from switchyard.schemas.routing import Provider

    with pytest.raises(InvalidRequest) as refused:
        decode(rb'{"kind": "openai", "secret": "\ud800"}', Provider, "provider")
    assert "'secret' has an invalid \\u escape" in refused.value.message
    assert refused.value.param == "secret"
    said, param = bad_json.explained("Input data was truncated", rb'{"custom_id": "\udc00"}')
    assert said.startswith("'custom_id' has an invalid \\u escape")
    assert param == "custom_id"
