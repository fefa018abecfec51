"""A whole answer's deadline from an SDK's own timeout passes a moment after the SDK gives up,
so the SDK raises its timeout error (as against OpenAI), not the edge's 504."""

from __future__ import annotations

from switchyard.ingress.timeouts import SDK_GRACE_S, deadline_header, deadline_limit


def test_an_sdk_timeout_sets_the_deadline_of_a_whole_answer_a_grace_later() -> None:
    read = {b"x-stainless-read-timeout": b"0.4"}
    assert deadline_header(read, streamed=False) == str(0.4 + SDK_GRACE_S).encode()
    node = {b"x-stainless-timeout": b"30", b"x-stainless-read-timeout": b"5"}
    assert deadline_header(node, streamed=False) == str(30 + SDK_GRACE_S).encode()
    assert "X-Stainless-Read-Timeout (0.4 s, and 1 s for the SDK to leave first)" in (
        deadline_limit(read, streamed=False, default_s=600, max_s=3600)
    )


def test_the_clients_own_deadline_and_streams_are_as_they_were() -> None:
    both = {b"x-request-timeout": b"7", b"x-stainless-read-timeout": b"0.4"}
    assert deadline_header(both, streamed=False) == b"7"
    assert deadline_header({b"x-stainless-timeout": b"2"}, streamed=True) is None
    assert deadline_header({b"x-stainless-timeout": b"NOT_GIVEN"}, streamed=False) is None
    assert deadline_header({}, streamed=False) is None


def test_the_grace_is_capped_and_the_504_then_names_the_cap() -> None:
    """The edge caps the deadline (value + grace) at ``ingress.max_deadline_s``: an SDK timeout
    less than the grace short of it gets the cap, and the 504 must blame the cap, not the SDK's
    timeout (whose grace vanished)."""
    near = {b"x-stainless-timeout": b"3599.5"}
    limit = deadline_limit(near, streamed=False, default_s=600, max_s=3600)
    assert limit.startswith("the gateway's limit ingress.max_deadline_s (3600 s)"), limit
    assert "X-Stainless-Timeout of 3599.5 s" in limit
    clear = {b"x-stainless-read-timeout": b"3599"}  # 3599 + 1 s is exactly the cap: not capped
    assert deadline_limit(clear, streamed=False, default_s=600, max_s=3600).startswith(
        "the client's own X-Stainless-Read-Timeout (3599 s"
    )
    own = {b"x-request-timeout": b"3599.5"}  # X-Request-Timeout has no grace: not capped
    assert deadline_limit(own, streamed=False, default_s=600, max_s=3600).startswith(
        "the client's own X-Request-Timeout (3599.5 s)"
    )
