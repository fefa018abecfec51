"""A contract header spelled in another case is refused with 400, not silently ignored,
whether or not the request spelled ``Sy-Request-Id`` right.

NATS header names are case-sensitive, and some clients (not nats-py) lowercase them all: a
``sy-request-id`` or ``sy-deadline`` was dropped without a word, so the request ran under a
generated id and the default deadline. Next to a right ``Sy-Request-Id`` it still was (the
check ran only when the id was missing).
"""

from __future__ import annotations

import json

import pytest

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope, MalformedHeader
from switchyard.schemas.openai import error_body

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("sent", "right"),
    [
        ("sy-request-id", h.REQUEST_ID),
        ("sy-deadline", h.DEADLINE),
        ("SY-ATTEMPT", h.ATTEMPT),
        ("sy-key-hash", h.KEY_HASH),
        ("authorization", h.AUTHORIZATION),  # Node clients send it so
    ],
)
def test_a_header_in_another_case_is_a_400_naming_its_spelling(sent: str, right: str) -> None:
    with pytest.raises(MalformedHeader) as refused:
        Envelope.decode({sent: "1", "Sy-Stream": "1"})
    exc = refused.value
    assert exc.status == 400
    assert exc.header == sent
    body = json.loads(error_body(exc))["error"]
    assert body["param"] == sent
    assert body["code"] == "invalid_header"
    assert body["type"] == "invalid_request_error"
    assert right in body["message"]
    assert "case-sensitive" in body["message"]
    # Spelled right, it is taken; headers outside the contract are still ignored.
    value = "1999999999999" if right == h.DEADLINE else "1"  # unix ms (seconds are refused)
    env = Envelope.decode({right: value, "Sy-Stream": "1", "x-custom": "1", "sy-unknown": "1"})
    assert env.stream


@pytest.mark.parametrize(
    ("sent", "value", "right"),
    [
        ("sy-deadline", "1000000000000", h.DEADLINE),  # in the past: served on the default
        ("SY-DEADLINE", "1999999999999", h.DEADLINE),
        ("sy-priority", "zzz", h.PRIORITY),
        ("sy-Attempt", "2", h.ATTEMPT),
        ("sy-cancel-proof", "x", h.CANCEL_PROOF),
        ("authorization", "Bearer sk-sy-x", h.AUTHORIZATION),
    ],
)
def test_next_to_a_right_request_id_a_header_in_another_case_is_a_400(
    sent: str, value: str, right: str
) -> None:
    with pytest.raises(MalformedHeader) as refused:
        Envelope.decode({h.REQUEST_ID: "r-1", sent: value, "Sy-Stream": "1"})
    assert refused.value.header == sent
    assert f"spell it {right}" in str(refused.value)


def test_headers_outside_the_contract_are_still_ignored() -> None:
    env = Envelope.decode(
        {
            h.REQUEST_ID: "r-1",
            "sy-unknown": "1",
            "Nats-Msg-Id": "m",
            "x-custom": "1",
            h.TRACEPARENT: "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        }
    )
    assert env.request_id == "r-1"
    assert env.traceparent.startswith("00-")
