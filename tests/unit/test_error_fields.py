"""Reading a provider's error body in the shapes servers give it (see providers.error_fields)."""

from __future__ import annotations

import pytest

from switchyard.workers.modelproxy.providers.error_fields import (
    MAX_MESSAGE_CHARS,
    ErrorFields,
    error_fields,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error": {"message": "bad", "type": "invalid_request_error", "param": "n",'
            b' "code": "integer_below_min_value"}}',
            ErrorFields("bad", "integer_below_min_value", "n"),
        ),
        (  # vLLM: the status as its code, its own type
            b'{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}',
            ErrorFields("too long"),
        ),
        (  # Azure's content filter: type null
            b'{"error": {"message": "filtered", "type": null, "param": "prompt",'
            b' "code": "content_filter"}}',
            ErrorFields("filtered", "content_filter", "prompt"),
        ),
        (b'{"error": "no such model"}', ErrorFields("no such model")),
        (b'{"detail": "Not Found"}', ErrorFields("Not Found")),
        (
            b'{"detail": [{"loc": ["body", "n"], "msg": "bad", "input": {"secret": 1}},'
            b' {"msg": "worse"}]}',
            ErrorFields("bad; worse"),
        ),
        (
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}',
            ErrorFields("busy"),
        ),
        (b"upstream says\n  no\n", ErrorFields("upstream says no", plain=True)),
        (b"<html><body>502</body></html>", ErrorFields()),
        (b"", ErrorFields()),
        (b"[1, 2]", ErrorFields()),
        (b'{"error": {"message": "  ", "code": ""}}', ErrorFields()),
        (b'{"other": 1}', ErrorFields()),
    ],
)
def test_each_shape_says_what_it_can(body: bytes, expected: ErrorFields) -> None:
    assert error_fields(body) == expected


def test_a_long_message_is_cut() -> None:
    said = error_fields(b'{"error": {"message": "' + b"x" * 10_000 + b'"}}').message
    assert said is not None
    assert len(said) == MAX_MESSAGE_CHARS
    assert said.endswith("...")


def test_a_hostile_body_nested_deep_is_cut_text() -> None:
    said = error_fields(b"[" * 100_000)
    assert said == ErrorFields("[" * (MAX_MESSAGE_CHARS - 3) + "...", plain=True)
