"""What a stream's client is told when it read too slowly (client.py ``too_slow``).

The message said "over 8388608 bytes of it waited unread" to a client that had received
~2.9 MB (explorer): the limit counts messages, each with 512 bytes beyond its own, so the
byte count read as wrong, and it named nothing to change.
"""

from __future__ import annotations

import pytest

from switchyard.bus.unread import MAX_UNREAD_BYTES, MSG_COST, too_slow
from switchyard.errors import ReaderTooSlow

pytestmark = pytest.mark.unit


def test_the_message_says_the_limit_in_mib_what_it_counts_and_the_setting() -> None:
    error = too_slow(MAX_UNREAD_BYTES)
    assert isinstance(error, ReaderTooSlow)
    assert (error.status, error.type, error.code) == (
        408,
        "invalid_request_error",
        "reader_too_slow",
    )
    message = error.message
    assert "more than 8 MiB" in message, message
    assert "8388608" not in message
    assert f"counted as messages (each message's bytes plus {MSG_COST}" in message, message
    assert "ingress.max_unread_bytes" in message, message


@pytest.mark.parametrize(
    ("limit", "said"),
    [(64 * 1024, "0.06 MiB"), (10_000_000, "9.54 MiB"), (32 * 1024 * 1024, "32 MiB")],
)
def test_other_limits_are_said_in_mib_too(limit: int, said: str) -> None:
    assert f"more than {said} of it" in too_slow(limit).message
