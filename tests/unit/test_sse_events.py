"""How the direct path joins a streamed event's several ``data:`` lines: per the SSE standard,
made one line again (the stream itself: tests/test_sse_multiline.py)."""

from __future__ import annotations

import pytest

from switchyard.errors import ProviderError
from switchyard.workers.modelproxy.providers.openai_compat import _joined

pytestmark = pytest.mark.unit


def test_several_lines_are_joined_into_one() -> None:
    parts = [b"{", b'"id": "c",', b'"n": 1.50,', b'"s": "a b"', b"}"]
    assert _joined(parts, "p") == b'{"id":"c","n":1.50,"s":"a b"}'  # values kept as written
    assert _joined([b"", b""], "p") is None  # no data: not dispatched


def test_joined_lines_that_are_not_json_are_the_providers_failure() -> None:
    with pytest.raises(ProviderError) as raised:
        _joined([b"{", b'"id": '], "p")
    assert raised.value.retryable
    assert "2 data lines" in raised.value.message
