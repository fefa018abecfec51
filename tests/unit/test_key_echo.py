"""Provider keys in successful answers: what is searched for and how it is masked."""

from __future__ import annotations

import pytest

from switchyard.schemas.secret import Secret
from switchyard.workers.modelproxy.key_echo import EchoedKeys, needle

pytestmark = pytest.mark.unit


def test_a_key_is_masked_wherever_it_appears_and_short_keys_are_not_searched() -> None:
    key = needle(Secret("sk-proj-0123456789abcdef"))
    echoed = EchoedKeys()
    answer = b'{"a": "sk-proj-0123456789abcdef", "b": "x sk-proj-0123456789abcdef"}'
    assert echoed.masked(answer, key, "p") == b'{"a": "***", "b": "x ***"}'
    assert echoed.masked(b'{"a": "sk-proj-0123"}', key, "p") == b'{"a": "sk-proj-0123"}'
    # A short secret (no real provider key) would mask common text: not searched for.
    assert needle(Secret("short")) == b""
    assert needle(None) == b""
    assert echoed.masked(b"short answer", needle(Secret("short")), "p") == b"short answer"
