"""The head's line about messages without a reply subject names the latest one's kind whole.

It read "(the latest: a message withou on llm.v1.chat, request noreply-1)": the kind, or the
words standing for a missing one, were cut at 16 characters.
"""

from __future__ import annotations

import pytest

from switchyard.bus import headers as h
from switchyard.workers.head.odd_messages import kind_said

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({}, "a message without Sy-Kind"),
        ({h.KIND: "final"}, "a final message"),
        ({h.KIND: "error"}, "an error message"),
        ({h.KIND: "accepted"}, "an accepted message"),
        ({h.KIND: "x" * 500}, "a message with an unknown Sy-Kind"),
        ({h.KIND: "a-very-long-kind-name"}, "a message with an unknown Sy-Kind"),
    ],
)
def test_the_kind_is_said_whole(headers: dict[str, str], said: str) -> None:
    assert kind_said(headers) == said
