"""Anthropic's 529 (overloaded) after every attempt: the head answers it as overloaded, not as
a 502 failure, and an OpenAI client is told 503 (529 is no status of OpenAI's)."""

from __future__ import annotations

import json

import pytest

from switchyard.bus.envelope import Deadline, Envelope
from switchyard.dialects import anthropic
from switchyard.errors import ProviderError
from switchyard.runtime.http import error_response
from switchyard.schemas.openai import openai_status
from switchyard.workers.head.decide import exhausted

pytestmark = pytest.mark.unit


def _env(**fields: object) -> Envelope:
    env = Envelope(request_id="req-1", alias="claude", reply="_INBOX.x", op="messages")
    return env.with_(deadline=Deadline.after(60), **fields)


def test_every_attempt_overloaded_is_answered_overloaded() -> None:
    env = _env(tried=("a/x", "b/y"), last_status=529, errors="a/x: 529 busy, b/y: 529 busy")
    exc = exhausted(env)
    assert isinstance(exc, ProviderError)
    assert (exc.status, exc.type, exc.code) == (529, "overloaded_error", "provider_overloaded")
    assert "b/y: 529 busy" in exc.message
    body = json.loads(anthropic.error_body(exc, request_id="req-1"))
    assert body["error"]["type"] == "overloaded_error"
    # A 502 from the last attempt stays the failure it was.
    other = exhausted(_env(tried=("a/x",), last_status=502, errors="a/x: 502 bad"))
    assert (other.status, other.code) == (502, "all_deployments_failed")


def test_an_openai_client_is_told_503() -> None:
    exc = exhausted(_env(tried=("a/x",), last_status=529, errors="a/x: 529 busy"))
    assert error_response(exc).status_code == 503
    assert openai_status(529) == 503
    assert openai_status(429) == 429
