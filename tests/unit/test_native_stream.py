"""A native stream's failure events, mapped as the same error answered as an HTTP status, and
its opening events held back until the answer's first event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.errors import InvalidRequest, ProviderError, ProviderRateLimited
from switchyard.schemas.secret import Secret
from switchyard.workers.modelproxy.providers.native_stream import (
    Opening,
    idle_clock,
    named_type,
    reported_failure,
)


def _sse(kind: str, doc: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(doc)}\n\n".encode()


def _anthropic(kind: str, message: str = "m") -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    ("kind", "status", "upstream", "retried"),
    [
        ("overloaded_error", 529, 529, True),
        ("api_error", 502, 500, True),
        ("timeout_error", 502, 504, True),
        ("some_new_error", 502, 500, True),
    ],
)
def test_anthropic_provider_failures_are_retried_and_cool(
    kind: str, status: int, upstream: int, retried: bool
) -> None:
    failure = reported_failure("messages", "error", _anthropic(kind), "ant", None)
    assert isinstance(failure, ProviderError)
    assert (failure.status, failure.upstream_status, failure.retryable) == (
        status,
        upstream,
        retried,
    )
    assert failure.retry_after is None  # the heads' routing.cooldown_s


def test_anthropic_rate_limit_and_request_errors() -> None:
    limited = reported_failure("messages", "error", _anthropic("rate_limit_error"), "ant", None)
    assert isinstance(limited, ProviderRateLimited)
    refused = reported_failure(
        "messages", "error", _anthropic("invalid_request_error", "bad"), "ant", None
    )
    assert isinstance(refused, InvalidRequest)
    assert refused.status == 400
    assert refused.message.startswith("bad")


def test_the_key_is_redacted_from_the_message() -> None:
    key = Secret("sk-ant-0123456789abcdef")
    failure = reported_failure(
        "messages", "error", _anthropic("api_error", f"bad key {key.reveal()}"), "ant", key
    )
    assert failure is not None
    assert key.reveal() not in failure.message


@pytest.mark.parametrize(
    ("kind", "doc", "expected"),
    [
        ("error", {"type": "error", "code": "server_error", "message": "x"}, ProviderError),
        ("error", {"type": "error", "error": {"type": "server_error"}}, ProviderError),
        ("error", {"type": "error", "code": "rate_limit_exceeded"}, ProviderRateLimited),
        ("error", {"type": "error", "code": "invalid_image_url"}, InvalidRequest),
        (
            "response.failed",
            {"type": "response.failed", "response": {"error": {"code": "server_error"}}},
            ProviderError,
        ),
    ],
)
def test_responses_failures(kind: str, doc: dict[str, Any], expected: type) -> None:
    failure = reported_failure("responses", kind, json.dumps(doc).encode(), "oai", None)
    assert isinstance(failure, expected)
    if isinstance(failure, ProviderError) and not isinstance(failure, ProviderRateLimited):
        assert failure.retryable


def test_other_events_report_nothing() -> None:
    assert reported_failure("messages", "message_stop", b"{}", "ant", None) is None
    assert reported_failure("responses", "response.incomplete", b"{}", "oai", None) is None
    # Anthropic has no response.failed: an event of that name is not its failure.
    assert reported_failure("messages", "response.failed", b"{}", "ant", None) is None


def _take(opening: Opening, event: bytes) -> list[bytes]:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            opening.feed(line)
    return opening.take(event)


def test_openings_wait_for_the_first_event_of_the_answer() -> None:
    opening = Opening("messages", "ant", None)
    start = _sse("message_start", {"type": "message_start", "message": {}})
    ping = _sse("ping", {"type": "ping"})
    block = _sse("content_block_start", {"type": "content_block_start", "index": 0})
    assert _take(opening, start) == []
    assert _take(opening, ping) == []
    assert _take(opening, block) == [start, ping, block]
    late = _sse("error", {"type": "error", "error": {"type": "overloaded_error"}})
    assert _take(opening, late) == [late]  # content went out: relayed as it is


def test_an_error_after_the_openings_is_raised() -> None:
    opening = Opening("messages", "ant", None)
    assert _take(opening, _sse("message_start", {"type": "message_start"})) == []
    error = _sse("error", {"type": "error", "error": {"type": "overloaded_error"}})
    with pytest.raises(ProviderError) as raised:
        _take(opening, error)
    assert raised.value.status == 529


def test_an_event_without_an_event_line_is_told_by_its_data() -> None:
    opening = Opening("responses", "oai", None)
    created = b'data: {"type":"response.created","response":{}}\n\n'
    assert _take(opening, created) == []
    with pytest.raises(ProviderError):
        _take(opening, b'data: {"type":"error","code":"server_error","message":"x"}\n\n')


@pytest.mark.parametrize(
    ("kinds", "running"),
    [
        # Messages: every event of the answer is activity (pings too).
        (("messages", ["content_block_start"]), True),
        (("messages", ["ping"]), True),
        # Responses: only from the first delta; silent work stops it until the next.
        (("responses", ["response.output_item.added"]), False),
        (("responses", ["response.output_item.added", "response.output_item.done"]), False),
        (("responses", ["response.reasoning_summary_text.delta"]), True),
        (("responses", ["response.output_text.delta", "response.output_text.done"]), True),
        (("responses", ["response.output_text.delta", "response.output_item.added"]), False),
        (
            ("responses", ["response.output_text.delta", "response.web_search_call.searching"]),
            False,
        ),
        (
            ("responses", ["response.output_text.delta", "response.file_search_call.in_progress"]),
            False,
        ),
        (
            (
                "responses",
                [
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.output_text.delta",
                ],
            ),
            True,
        ),
    ],
)
def test_what_runs_a_native_streams_idle_clock(kinds: tuple[str, list[str]], running: bool) -> None:
    op, events = kinds
    state = False
    for kind in events:
        state = idle_clock(op, kind, state)
    assert state is running


def test_an_events_type_is_read_from_its_first_line() -> None:
    assert named_type(b"event: response.output_text.delta\ndata: {}\n") == (
        "response.output_text.delta"
    )
    assert named_type(b'data: {"type": "x"}\n') == ""
