"""The 400s for malformed OpenAI request bodies name the field in the message itself: the
OpenAI SDKs print only the message ("Error code: 400 - ..."), not ``param``."""

import pytest

from switchyard.errors import InvalidRequest
from switchyard.schemas.openai import probe


@pytest.mark.parametrize(
    ("op", "body", "message", "param", "code"),
    [
        (
            "chat",
            b'{"model": "m", "messages": []}',
            "Invalid 'messages': expected 'array' of length >= 1.",
            "messages",
            "invalid_request",
        ),
        (
            "chat",
            b'{"model": "m", "messages": "hi"}',
            "Invalid 'messages': expected 'array', got 'str'.",
            "messages",
            "invalid_request",
        ),
        (
            "chat",
            b'{"model": "m"}',
            "Missing required parameter: 'messages'.",
            "messages",
            "missing_required_parameter",
        ),
        (
            "embed",
            b'{"model": 7, "input": "x"}',
            "Invalid 'model': expected 'str', got 'int'.",
            "model",
            "invalid_request",
        ),
        (
            "complete",
            b'{"model": "m", "prompt": "x", "stream": "yes"}',
            "Invalid 'stream': expected 'bool | null', got 'str'.",
            "stream",
            "invalid_request",
        ),
        ("chat", b"[1, 2]", "request body must be a JSON object", None, "invalid_request"),
        # A provider may choke on these rather than refuse them (a fuzzed `"prompt": {}` ended
        # a fake provider's stream early: a 502), so the edge refuses them as OpenAI does.
        (
            "complete",
            b'{"model": "m", "prompt": {}, "stream": true}',
            "Invalid 'prompt': expected a string or an array of strings or token ids.",
            "prompt",
            "invalid_request",
        ),
        (
            "embed",
            b'{"model": "m", "input": 7}',
            "Invalid 'input': expected a string or an array of strings or token ids.",
            "input",
            "invalid_request",
        ),
    ],
)
def test_the_message_names_the_field(
    op: str, body: bytes, message: str, param: str | None, code: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        probe(op, body)
    assert (caught.value.message, caught.value.param, caught.value.code) == (message, param, code)


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("complete", b'{"model": "m", "prompt": "x"}'),
        ("complete", b'{"model": "m", "prompt": [[1, 2], [3]]}'),
        ("embed", b'{"model": "m", "input": ["a", "b"]}'),
        ("embed", b'{"model": "m", "input" :  "a"}'),
    ],
)
def test_strings_and_arrays_pass(op: str, body: bytes) -> None:
    probe(op, body)
