"""A message on ``llm.v1.cancel`` that cancels nothing says why (:meth:`Cancels.hear`).

``heard`` returned False for ``Sy-Deadline`` in seconds, a garbage ``Sy-Deadline``, a
lowercased ``sy-cancel-proof`` or no proof, and nothing told the caller, the log or a metric:
the caller thought its request cancelled while it ran on.
"""

from __future__ import annotations

import json

import pytest

from switchyard.bus import headers as h
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.schemas.openai import error_body
from switchyard.workers.modelproxy.cancels import (
    INVALID_HEADER,
    NO_PROOF,
    NO_REQUEST_ID,
    Cancels,
)

pytestmark = pytest.mark.unit

PROOF = cancel_proof("a" * 64, "r-1")


@pytest.mark.parametrize(
    ("headers", "reason", "param", "said"),
    [
        ({}, NO_REQUEST_ID, h.REQUEST_ID, "missing"),
        ({h.CANCEL_PROOF: PROOF}, NO_REQUEST_ID, h.REQUEST_ID, "missing"),
        (
            {h.REQUEST_ID: "r-1", h.CANCEL_PROOF: PROOF, h.DEADLINE: "1999999999"},
            INVALID_HEADER,
            h.DEADLINE,
            "can only be seconds",
        ),
        (
            {h.REQUEST_ID: "r-1", h.CANCEL_PROOF: PROOF, h.DEADLINE: "soon"},
            INVALID_HEADER,
            h.DEADLINE,
            "milliseconds",
        ),
        (
            {h.REQUEST_ID: "r-1", "sy-cancel-proof": PROOF},
            INVALID_HEADER,
            "sy-cancel-proof",
            "spell it Sy-Cancel-Proof",
        ),
        (  # (said "missing": the id was looked for only as spelled right)
            {"sy-request-id": "r-1", h.CANCEL_PROOF: PROOF},
            INVALID_HEADER,
            "sy-request-id",
            "spell it Sy-Request-Id",
        ),
        ({h.REQUEST_ID: "r-1"}, NO_PROOF, h.CANCEL_PROOF, "missing"),
        ({h.REQUEST_ID: "r-1", h.CANCEL_PROOF: "xyz"}, NO_PROOF, h.CANCEL_PROOF, "64 hex"),
    ],
)
def test_a_message_that_cancels_nothing_says_why(
    headers: dict[str, str], reason: str, param: str, said: str
) -> None:
    cancels = Cancels()
    refused = cancels.hear(headers)
    assert refused is not None
    assert refused.reason == reason
    assert refused.status == 400
    body = json.loads(error_body(refused))["error"]
    assert (body["code"], body["param"], body["type"]) == (
        "invalid_header",
        param,
        "invalid_request_error",
    )
    assert said in body["message"]
    assert PROOF not in body["message"]  # the proof is never echoed
    assert not cancels.heard(headers)
    assert len(cancels.memory) == 0


def test_a_right_cancel_is_heard() -> None:
    cancels = Cancels()
    headers = {h.REQUEST_ID: "r-1", h.CANCEL_PROOF: PROOF, h.DEADLINE: "1999999999999"}
    assert cancels.hear(headers) is None
    assert len(cancels.memory) == 1
